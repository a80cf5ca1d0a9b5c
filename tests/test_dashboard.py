"""The mechanism dashboard in a real default fit: its layout is in the event file, and its charts have curves."""

import re

import pytest
from tensorboard.backend.event_processing.event_accumulator import TENSORS, EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2

from prevpos.analysis import AnalysisPlugin
from prevpos.cli import main
from prevpos.dashboard import LAYOUT, TABLE_SCORES, layout_for
from prevpos.notices import PrevposWarning

TINY_DEFAULT_FIT = ["fit", "--trainer.max_epochs=1", "--data.steps_per_epoch=3", "--data.batch_size=64",
                    "--data.val_size=256", "--data.probe_size=128", "--trainer.log_every_n_steps=1",
                    "--trainer.enable_progress_bar=false"]
# A 3-step run never gets 0.1 nats below uniform layer-1 attention, so Explanation rightly logs no fraction yet.
NOT_YET = {"fraction of loss recovered"}


def fit_and_read_layout(run_dir, *args, empty=NOT_YET) -> tuple[EventAccumulator, layout_pb2.Layout, dict]:
    """Fit, then its events, its dashboard layout and its scalars; every chart of the layout but `empty` must have
    curves."""
    main([*TINY_DEFAULT_FIT, *args])
    events = EventAccumulator(str(run_dir), size_guidance={TENSORS: 0, "scalars": 0})
    events.Reload()
    layout = layout_pb2.Layout()
    layout.ParseFromString(events.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    assert not [t for t in events.Tags()[TENSORS] if t.startswith("plugin_errors/")]
    scalars = {tag: events.Scalars(tag) for tag in events.Tags()["scalars"]}
    for category in layout.category:
        for chart in category.chart:
            if chart.title in empty:
                continue
            drawn = [t for t in scalars if any(re.match(regex, t) for regex in chart.multiline.tag)]
            assert drawn, f"{category.title} / {chart.title}: no logged tag matches {list(chart.multiline.tag)}"
    return events, layout, scalars


def test_opt_in_plugins_add_their_own_panels_and_a_default_fit_has_none_of_them(in_tmp):
    _, layout, scalars = fit_and_read_layout(in_tmp / "lightning_logs" / "default" / "version_0",
                                             "--trainer.callbacks+=HeadAblation",
                                             "--trainer.callbacks+=LogitAttribution")
    assert [c.title for c in layout.category] == [*LAYOUT, "8 head ablation (loss and accuracy without each head)",
                                                  "9 direct logit attribution"]
    charted = layout.category[-1].chart[0].multiline.tag
    assert {t for t in scalars if t.startswith("dla/") and any(re.match(r, t) for r in charted)} == {
        "dla/embed", "dla/L0H0", "dla/L1H0"}  # not the sum check


def test_with_three_layers_panel_3_follows_the_last_layer(in_tmp):
    """Panel 3 charted layer 1 in any model: with 3 layers, a head attending to itself, not the previous token."""
    _, layout, _ = fit_and_read_layout(in_tmp / "lightning_logs" / "default" / "version_0", "--model.n_layers=3",
                                       empty={"fraction of loss recovered", "losses"})  # Explanation: 2 layers only
    panel = layout.category[2]
    assert panel.title == "3 layer 2 attends to the previous token"
    assert [(chart.title, list(chart.multiline.tag)) for chart in panel.chart][0] == (
        "where layer 2 attends: previous, itself, BOS", [r"attention/(prev_token|self|bos)_score/L2H\d+$"])


def test_default_fit_writes_the_dashboard_and_every_chart_has_curves_from_step_0(in_tmp):
    events, layout, scalars = fit_and_read_layout(in_tmp / "lightning_logs" / "default" / "version_0")
    assert [c.title for c in layout.category] == list(LAYOUT)
    # every column of the HPARAMS table has this run's value (but the explanation's fractions, as above)
    assert [t for t in TABLE_SCORES if t not in scalars] == ["explanation/restricted_recovered",
                                                              "explanation/algorithm_recovered"]

    # The lr each step trained at (warm-up from 0.05 x lr: steps 0, 1, 2 of 20), which no curve showed.
    assert [(e.step, round(e.value / 3e-3, 6)) for e in scalars["train/lr"]] == [(0, 0.05), (1, 0.0975), (2, 0.145)]

    # Every analysis scalar starts at step 0 (before training), so each curve shows where it began.
    analysis = [t for t in scalars if not t.startswith(("train/", "val/", "epoch"))]
    assert len(analysis) > 50 and any(t.startswith("length/") for t in analysis)
    assert [t for t in analysis if scalars[t][0].step != 0] == []


def test_a_plugins_chart_pattern_that_is_no_regex_is_left_out_with_a_warning():
    """TensorBoard's server compiles each pattern as the tab opens; a plugin's typo went into the event file."""
    class _Typo(AnalysisPlugin):
        dashboard = {"mine": {"chart": [r"mine/[unclosed", r"mine/ok$"]}}

    with pytest.warns(PrevposWarning, match=r"_Typo.dashboard, chart 'chart': 'mine/\[unclosed' is not a regular "
                                            r"expression \(unterminated character set at position 5\); left out"):
        layout = layout_for([_Typo()])
    assert layout[f"{len(LAYOUT) + 1} mine"] == {"chart": ["Multiline", [r"mine/ok$"]]}


def test_without_bos_the_counting_charts_say_a_0_and_read_the_same_tags(in_tmp):
    """no_bos's dashboard titled its layer-0 charts "BOS attention", of sequences that have no BOS."""
    def tags(layout: dict) -> list[str]:
        return sorted(tag for charts in layout.values() for _, patterns in charts.values() for tag in patterns)

    without = layout_for([], bos=False)
    assert layout_for([]) == LAYOUT and tags(without) == tags(LAYOUT) and "BOS" not in str(without)
    _, layout, _ = fit_and_read_layout(in_tmp / "lightning_logs" / "default" / "version_0", "--data.bos=false")
    counting, looking_back = layout.category[1], layout.category[2]
    assert counting.title == "2 layer 0 counts (a_0 weight falls with position)"
    assert counting.chart[0].title == "a_0 attention by position"
    assert looking_back.chart[0].title == "where layer 1 attends: previous, itself, a_0"
