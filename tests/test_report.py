"""`python -m prevpos report`: on a real short run, on an analyze-style directory, on several runs, on bad input."""

import base64
import csv
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from prevpos.analysis import AnalysisPlugin, Findings
from prevpos.cli import main
from prevpos.live_fit import LOCK, process_start
from prevpos.notices import PrevposWarning
from prevpos.report.departures import departures
from prevpos.report.html import MARKER
from prevpos.report.mechanisms import crossings
from prevpos.report.page import build_report
from prevpos.report.run import RunRecord, read_run
from prevpos.report import page, seeds
from prevpos.report.seeds import build_summary, run_labels, spread
from prevpos.report.snapshots import snapshot_steps
from prevpos.report.story import claims, loss
from prevpos.report.timeline import timeline_figure

# 60 steps at batch 256 with the default plugins (4 analyses: steps 0, 20, 40, 60): val acc leaves chance and
# several scores move. Most of its ~30 s (quiet 2-core CPU) is the plugins drawing figures.
SHORT_FIT = ["fit", "--trainer.max_epochs=3", "--data.steps_per_epoch=20", "--data.val_size=512",
             "--data.probe_size=128", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    home, cwd = tmp_path_factory.mktemp("run"), os.getcwd()
    os.chdir(home)
    try:
        main(SHORT_FIT)
    finally:
        os.chdir(cwd)
    return home / "lightning_logs" / "default" / "version_0"


@pytest.fixture(scope="module")
def report(run_dir: Path) -> str:
    main(["report", str(run_dir)])
    return (run_dir / "report.html").read_text()


def final_scalars(run_dir: Path) -> dict[str, list]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def embedded_pngs(html: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


def test_report_has_every_section(report):
    assert report.startswith("<!DOCTYPE html>\n" + MARKER)
    for section in ['id="run"', 'id="final-metrics"', 'id="timeline"', 'id="algorithm"', 'id="snapshots"', 'id="figures"']:
        assert section in report
    for claim in ["The task is learned", "Layer 0 counts", "Layer 1 attends to the previous token",
                  "OV circuit copies", "Length generalization"]:
        assert claim in report
    assert "model.n_layers" in report and "config.yaml" in report
    assert "http" not in report.split("</style>")[1]  # self-contained: nothing fetched


def test_numbers_in_the_text_are_the_event_files_final_values(report, run_dir):
    logged = final_scalars(run_dir)
    final = {tag: series[-1][1] for tag, series in logged.items()}
    assert f"accuracy {final['val/acc']:.4f} and loss {loss(final['val/loss'])}" in report
    assert f"puts {final['attention/prev_token_score/L1H0']:.3f} of each position" in report
    assert f"BOS attention {final['attention/bos_by_pos/L0H0/pos1']:.3f} at a_1" in report
    assert f"For {final['ov/copy_top1/L1H0']:.1%} of source tokens" in report
    assert f"direct {loss(final['qk_terms/zero_ablation_loss/direct'])}" in report
    assert f"recovers {final['explanation/restricted_recovered']:.1%} of the loss" in report
    assert f"{final['length/acc_len10']:.4f} at length 10" in report
    assert f"no BOS {loss(final['adversarial/no_bos/loss'])}" in report


def test_timeline_marks_the_first_crossing_seen_in_the_events(report, run_dir):
    prev = final_scalars(run_dir)["attention/prev_token_score/L1H0"]
    assert prev[0][0] == 0  # the plugins log the random-init value at step 0
    crossed = next((str(step) for step, value in prev if value >= 0.5), "never")
    assert f'<td>prev-token attention (L1H0)</td><td class="num">0.5</td><td class="num">{crossed}</td>' in report


def test_images_are_embedded_pngs(report):
    pngs = embedded_pngs(report)
    assert len(pngs) >= 6  # timeline + mean patterns at the end + the snapshot grid
    timeline = matplotlib.image.imread(io.BytesIO(pngs[0]), format="png")
    assert timeline.shape[0] > 400 and timeline.shape[1] > 600 and timeline.std() > 0.01


def test_report_overwrites_only_its_own_file(report, run_dir, capsys):
    main(["report", str(run_dir)])  # a report it wrote: replaced
    assert "wrote" in capsys.readouterr().out
    other = run_dir.parent / "mine"
    shutil.copytree(run_dir, other)
    (other / "report.html").write_text("my notes")
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(other)])
    assert exit_info.value.code == 2 and (other / "report.html").read_text() == "my notes"
    assert "was not written by `prevpos report`" in capsys.readouterr().err


def test_out_may_name_a_directory(report, run_dir, tmp_path, capsys):
    """`--out DIR` raised IsADirectoryError with a traceback, and `--out newdir/` wrote a file called newdir."""
    existing = tmp_path / "reports"
    existing.mkdir()
    main(["report", str(run_dir), "--out", str(existing)])
    assert (existing / "report.html").read_text().startswith("<!DOCTYPE html>")
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(run_dir), "--out", str(tmp_path / "new") + "/"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "does not exist; create it first" in err and not (tmp_path / "new").exists()
    (tmp_path / "notes.html").write_text("my notes")
    with pytest.raises(SystemExit):
        main(["report", str(run_dir), "--out", str(tmp_path / "notes.html")])
    assert "move it, or pass another --out FILE" in capsys.readouterr().err


@pytest.mark.parametrize("make, message", [
    (lambda d: None, "has no TensorBoard events, no metrics.csv and no metrics.json"),
    (lambda d: (d / "version_0").mkdir() or (d / "version_0" / "events.out.tfevents.1.x.0").touch(),
     "It holds the runs version_0: pass one"),
    (lambda d: (d / "metrics.json").write_text('{"probe/acc": 0.9'), "is not valid JSON"),
    (lambda d: (d / "events.out.tfevents.1.x.0").write_bytes(b""), "hold no scalars yet"),
    (lambda d: (d / "metrics.csv").write_text("loss,acc\n0.5,0.9\n"), "is not a Lightning CSV log"),
    (lambda d: (d / "metrics.csv").write_text("epoch,step,val/acc\n0,9,0.5x\n"), "is not a Lightning CSV log"),
    (lambda d: (d / "metrics.csv").write_text(""), "its metrics.csv holds no scalars yet"),
    (lambda d: (d / "version_3").mkdir() or (d / "version_3" / "metrics.csv").touch(), "It holds the runs version_3"),
    (lambda d: [(d / f"version_{n}").mkdir() or (d / f"version_{n}" / "metrics.csv").touch() for n in (10, 2)],
     "It holds the runs version_2, version_10: pass one"),  # number order, not text order
    (lambda d: (d / "config.yaml").write_text("trainer:\n  logger:\n    class_path: lightning.pytorch.loggers.WandbLogger\n"),
     "is a W&B run: its scalars and figures are in W&B"),
    (lambda d: [(d / name / "version_0").mkdir(parents=True) or (d / name / "version_0" / "metrics.csv").touch()
                for name in ("default", "seeds")],  # lightning_logs itself
     "It holds the runs default/version_0, seeds/version_0: pass one"),
])
def test_bad_directory_is_one_line_and_exit_2(tmp_path, capsys, make, message):
    make(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err


def analyze_dir(path: Path, png: bytes, **metrics) -> Path:
    (path / "attention" / "mean_pattern").mkdir(parents=True)
    (path / "attention" / "mean_pattern" / "L1H0.png").write_bytes(png)
    (path / "metrics.json").write_text(json.dumps(metrics))
    return path


def test_a_report_of_a_run_still_training_says_so(tmp_path, run_dir, capsys):
    run = shutil.copytree(run_dir, tmp_path / "version_0")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # stands in for the fit
    try:
        (run / LOCK).write_text(json.dumps({"pid": live.pid, "host": socket.gethostname(), "started": "at 9:00",
                                            "process_start": process_start(live.pid)}))
        main(["report", str(run)])
    finally:
        live.kill()
        live.wait()
    said = (f"the run is still training (process {live.pid}, started at 9:00): this page shows it up to step 60; run "
            "`report` again when the fit ends")
    assert capsys.readouterr().out == f"wrote {run / 'report.html'}; {said}\n"
    assert f'<p class="note">{said}</p>' in (run / "report.html").read_text()
    main(["report", str(run)])  # the fit gone: a finished run's page
    assert said not in (run / "report.html").read_text()


def test_report_on_an_analyze_directory(tmp_path, run_dir):
    out = tmp_path / "analysis"
    main(["analyze", "--weights", str(run_dir / "checkpoints" / "last.ckpt"), "--out", str(out), "--probe_size", "128"])
    metrics = json.loads((out / "metrics.json").read_text())
    main(["report", str(out)])
    html = (out / "report.html").read_text()
    assert "No timeline" in html and 'id="snapshots"' not in html
    assert f"accuracy {metrics['probe/acc']:.4f} and loss {loss(metrics['probe/loss'])}" in html
    assert f"puts {metrics['attention/prev_token_score/L1H0']:.3f} of each position" in html
    assert (out / "attention" / "mean_pattern" / "L1H0.png").read_bytes() in embedded_pngs(html)
    assert "last logged step 60." in html  # the checkpoint's step (was 0)
    # Beside the run it analysed: the same settings (an analyze records only its probe's data settings), so a mean;
    # and no crossing steps, which one snapshot cannot tell (each was "step 0").
    main(["report", str(run_dir), str(out)])
    both = (tmp_path / "report.html").read_text() if (tmp_path / "report.html").exists() else \
        (Path(os.path.commonpath([run_dir, out])) / "report.html").read_text()
    assert "no mean or spread" not in both and "<th>mean</th>" in both
    row = re.search(r"<tr><td>analysis</td><td>[^<]*</td>(.*?)</tr>", both)
    assert row and set(re.findall(r"<td[^>]*>([^<]*)</td>", row.group(1))) == {"-"}


def test_an_analyze_that_ran_a_plugin_which_skipped_the_model_says_so(tmp_path, report):
    """Said "the QKTermImportance plugin was off": an analyze config.yaml has no trainer.callbacks. And its data
    settings (no BOS, 50 tokens) were not read: analyze wrote them under `probe:`, now `data:` as fit does."""
    out = analyze_dir(tmp_path / "analysis", embedded_pngs(report)[1], **{"probe/acc": 0.9, "probe/loss": 0.5})
    for plugins, said in ((None, "the QKTermImportance plugin was on but skips this model"),
                          (["AttentionPatterns,OVCircuit"], "the QKTermImportance plugin was off")):
        (out / "config.yaml").write_text(yaml.safe_dump({"analyze": {"plugins": plugins}, "step": 200,
                                                         "model": {"n_layers": 1},
                                                         "data": {"bos": False, "n_tokens": 50}}))
        run = read_run(out)
        assert "(chance: ln(50) = 3.912, over its 50 tokens)" in claims(run)[0].text  # was ln(100), d_vocab's
        assert said in next(c.missing for c in claims(run) if c.title.startswith("3. "))
        assert any("These sequences have no BOS" in note for note in departures(run))


def test_figures_are_read_in_step_order(tmp_path, report):
    """They reach the event file as each finishes drawing: "(end)" showed step 40 of a run that ended at 200, and
    the transition's frames ran 20, 60, 80, 40."""
    pngs = embedded_pngs(report)[:4]
    writer = SummaryWriter(str(tmp_path))
    for step, png in zip([0, 20, 60, 40], pngs):
        writer.add_image("attention/mean_pattern/L1H0", np.array(Image.open(io.BytesIO(png)).convert("RGB")), step,
                         dataformats="HWC")
        writer.add_scalar("val/acc", 0.5, step)
    writer.close()
    run = read_run(tmp_path)
    assert [step for step, _ in run.images["attention/mean_pattern/L1H0"]] == [0, 20, 40, 60]
    assert run.image_at("attention/mean_pattern/L1H0") == run.images["attention/mean_pattern/L1H0"][-1][1]


def test_report_shows_the_test_set_results_logged_beside_the_run(tmp_path, run_dir, capsys):
    run = shutil.copytree(run_dir, tmp_path / "version_0")
    # Two evaluations of the same checkpoint, the second logged as CSV: one value, the later one's.
    for logger, val_size in (("TensorBoardLogger", 256), ("CSVLogger", 512)):
        main(["test", "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), f"--data.val_size={val_size}",
              f"--trainer.logger={logger}", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"])
    first = final_scalars(run / "test" / "version_0")["test/acc"][-1][1]
    [final_csv] = [{tag: float(v) for tag, v in row.items()}
                   for row in csv.DictReader((run / "test" / "version_1" / "metrics.csv").open())]
    tested = final_csv["test/acc"]
    assert tested != first
    main(["report", str(run)])
    html = (run / "report.html").read_text()
    row = re.search(r'<tr><td>test/acc</td><td class="num">([^<]*)</td>', html)
    assert row and float(row.group(1)) == pytest.approx(tested, rel=1e-5)
    # The test's own folder holds a few numbers at one step, and a config of defaults: no page, the numbers and the run.
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(run / "test" / "version_1")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        f"prevpos: error: {run / 'test' / 'version_1'} is the log of `prevpos test`, not of a training run: test/acc "
        f"{tested:.4g}, test/loss {final_csv['test/loss']:.4g} at step {int(final_csv['step'])}; "
        f"`python -m prevpos report {run}` shows them in its run's story\n")
    assert not (run / "test" / "version_1" / "report.html").exists()


def test_a_run_with_no_mechanism_scores_has_an_empty_timeline_and_no_warning(run_dir):
    run = read_run(run_dir)  # as one with no plugins and no validation (--trainer.limit_val_batches 0) logs
    run.scalars = {tag: series for tag, series in run.scalars.items() if tag.startswith("train/")}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warned of a legend with nothing in it
        figure = timeline_figure(run)
    assert not figure.axes[0].lines and not figure.axes[1].lines


def test_several_runs_give_one_table_with_their_spread(tmp_path, report, capsys):
    png = embedded_pngs(report)[1]
    runs = [analyze_dir(tmp_path / name, png, **{"probe/acc": acc}) for name, acc in [("v10", 0.9), ("v2", 0.7)]]
    main(["report", *map(str, runs)])
    # Again as a shell glob lists them: with the page just written, which is not a run and is no news.
    main(["report", *map(str, sorted(tmp_path.iterdir()))])
    assert "skipped" not in capsys.readouterr().err
    html = (tmp_path / "report.html").read_text()
    row = re.search(r"<tr><td>probe/acc</td>" + r'<td class="num">([^<]*)</td>' * 6, html)
    assert row, "no probe/acc row in the table"
    v2, v10, mean, std, low, high = map(float, row.groups())  # in number order
    assert (v2, v10, low, high) == (0.7, 0.9, 0.7, 0.9)
    assert mean == pytest.approx(0.8) and std == pytest.approx(0.1414, abs=1e-3)


def test_one_run_named_twice_gets_its_own_page(tmp_path, report, capsys):
    """`report RUN RUN/` made the table of several runs, of the same run twice, and wrote it over RUN's report.html."""
    run = analyze_dir(tmp_path / "v0", embedded_pngs(report)[1], **{"probe/acc": 0.9})
    main(["report", str(run), f"{run}/", str(tmp_path / "." / "v0")])
    assert f"wrote {run / 'report.html'}" in capsys.readouterr().out
    assert 'id="algorithm"' in (run / "report.html").read_text()  # the one-run page, not the table
    assert not (tmp_path / "report.html").exists()


def test_a_run_that_cannot_be_read_is_skipped_from_the_table_of_several(tmp_path, report, capsys):
    png = embedded_pngs(report)[1]
    runs = [analyze_dir(tmp_path / name, png, **{"probe/acc": acc}) for name, acc in [("a", 0.9), ("b", 0.7)]]
    died = tmp_path / "died"  # a fit that stopped before its first scalar
    died.mkdir()
    (died / "events.out.tfevents.1.x.0").write_bytes(b"")
    main(["report", *map(str, runs), str(died)])  # one such run made the whole table fail
    html = (tmp_path / "report.html").read_text()
    assert re.search(r'<tr><td>probe/acc</td><td class="num">0.9</td><td class="num">0.7</td><td class="num">0.8</td>',
                     html)
    err = capsys.readouterr().err
    assert f"prevpos: report: skipped {died}: its TensorBoard events hold no scalars yet" in err
    assert err.count("\n") == 1
    assert f"skipped {died}" in html
    with pytest.raises(SystemExit) as exit_info:  # none readable: the first one's error, in one line
        main(["report", str(died), str(tmp_path / "missing")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "hold no scalars yet" in err and err.count("\n") == 1


def test_the_transition_is_shown_frame_by_frame(report):
    png = embedded_pngs(report)[1]
    accs = [0.01, 0.02, 0.2, 0.5, 0.85, 0.97, 0.99]
    frames = {tag: [(step, png) for step in range(0, 200, 25)]
              for tag in ("attention/mean_pattern/L1H0", "attention/mean_pattern/L0H0")}
    run = RunRecord(Path("."), "run", images=frames,
                    scalars={"val/acc": [(25 * (i + 1) - 1, a) for i, a in enumerate(accs)],
                             "attention/prev_token_score/L1H0": [(0, 0.2)]})
    section = build_report(run).split('id="frames"')[1].split("<h2")[0]
    # Layer 1 only (the head that learns to look back), from before the rise (step 50) to after it (150).
    assert "attention/mean_pattern/L1H0" in section and "L0H0" not in section
    captions = re.findall(r"<figcaption>([^<]*)</figcaption>", section)
    assert captions == ["step 50, val acc 0.020", "step 75, val acc 0.200", "step 100, val acc 0.500",
                        "step 125, val acc 0.850", "step 150, val acc 0.970"]
    assert len(embedded_pngs(section)) == 5
    flat = RunRecord(Path("."), "run", images=frames, scalars={"val/acc": [(24, 0.99), (49, 0.99)],
                                                               "attention/prev_token_score/L1H0": [(0, 0.2)]})
    assert 'id="frames"' not in build_report(flat)  # no transition to show


def test_snapshots_are_before_during_and_after_the_val_acc_rise():
    accs = [0.01, 0.02, 0.2, 0.5, 0.85, 0.97, 0.99]
    run = RunRecord(Path("."), "run", scalars={"val/acc": [(25 * (i + 1) - 1, a) for i, a in enumerate(accs)]})
    steps = snapshot_steps(run, [0, 25, 50, 75, 100, 125, 150, 175])
    assert steps == {"before": 50, "during": 100, "after": 150, "end": 175}


def test_the_story_follows_the_head_that_attends_to_the_previous_token():
    """With several heads in the last layer, the claims read head 0's scores, whichever head did the work: a run
    whose head 1 looks back (0.9) was said not to (0.1) and to copy at head 0's 20%."""
    scores = {"attention/prev_token_score/L1H0": 0.1, "attention/prev_token_score/L1H1": 0.9,
              "attention/self_score/L1H0": 0.6, "attention/self_score/L1H1": 0.05,
              "ov/copy_top1/L1H0": 0.2, "ov/copy_top1/L1H1": 1.0, "explanation/restricted_recovered": 0.83}
    scores |= {f"qk_terms/zero_ablation_loss/{term}/L1H{h}": loss_ for h, losses in [(0, (0.1, 0.2, 0.3, 0.4)),
                                                                                     (1, (5.0, 1.2, 0.1, 0.02))]
               for term, loss_ in zip(["direct", "qk_comp", "k_comp", "q_comp"], losses)}
    run = RunRecord(Path("."), "run", scalars={tag: [(600, value)] for tag, value in scores.items()})
    by_title = {claim.title[:2]: claim for claim in claims(run)}
    assert by_title["2."].text.startswith("On average layer 1 (head 1, the one most on the previous token) puts "
                                          "0.900 of each position's attention on the previous token, 0.050 on itself")
    assert by_title["2."].check[0] and by_title["4."].check[0] and by_title["3."].check[0]
    assert "For 100.0% of source tokens" in by_title["4."].text
    assert "the most important term is direct, then qk_comp" in by_title["3."].text
    assert by_title["5."].text.startswith("Keeping only the direct and qk_comp terms in every layer-1 head recovers "
                                          "83.0% of the loss")  # the explanation edits every head, not one
    one_head = RunRecord(Path("."), "run", scalars={"attention/prev_token_score/L1H0": [(600, 0.7)],
                                                    "explanation/restricted_recovered": [(600, 0.95)]})
    assert "(head" not in claims(one_head)[2].text
    assert claims(one_head)[5].text.startswith("Keeping only the direct and qk_comp terms recovers 95.0%")


def test_a_run_without_bos_is_held_to_the_adversarial_cases_it_has():
    """With no BOS in its data, AdversarialExamples logs no no_bos case, and the claim failed for the want of one."""
    for repeated, holds in [(3.0, True), (0.5, False)]:
        run = RunRecord(Path("."), "run", scalars={"adversarial/clean/loss": [(600, 1.0)],
                                                   "adversarial/repeated_pairs/loss": [(600, repeated)],
                                                   "adversarial/all_same/loss": [(600, 1.5)]})
        adversarial = claims(run)[6]
        assert adversarial.title.startswith("6. ") and adversarial.check == (holds, "repeated pairs > clean")
        assert "no BOS" not in adversarial.text


def test_runs_of_several_experiments_get_columns_that_tell_them_apart():
    """`report lightning_logs/two_heads/version_0 lightning_logs/default/version_0` headed both columns version_0."""
    def runs(*paths):
        return [RunRecord(Path(p), "run", scalars={"val/acc": [(9, 0.5)]}) for p in paths]

    assert run_labels(runs("logs/two_heads/version_0", "logs/default/version_0")) == ["two_heads/version_0",
                                                                                       "default/version_0"]
    assert run_labels(runs("logs/seeds/seed_0", "logs/seeds/seed_1")) == ["seed_0", "seed_1"]
    html = build_summary(runs("logs/two_heads/version_0", "logs/default/version_0"))
    assert "<th>two_heads/version_0</th><th>default/version_0</th>" in html
    assert spread([[0.5], [None]])["std"] == [None]  # one value has no spread: shown as "-", not 0


def test_the_opt_in_plugins_add_a_claim_only_where_they_ran():
    base = {"attention/prev_token_score/L1H0": 0.7, "qk_terms/clean_loss": 0.008}
    without = RunRecord(Path("."), "run", scalars={t: [(600, v)] for t, v in base.items()})
    assert len(claims(without)) == 8  # no "not measured" line for a plugin the run was never meant to have
    scores = base | {"head_ablation/zero_loss/L0H0": 3.54, "head_ablation/zero_loss/L1H0": 3.74,
                     "dla/L1H0": 16.9, "dla/L0H0": 1.05, "dla/embed": 0.006, "dla/sum_check_max_abs_err": 1e-5}
    parts = claims(RunRecord(Path("."), "run", scalars={t: [(600, v)] for t, v in scores.items()}))[-1]
    assert parts.text == ("Zeroing one head's output raises the probe loss to L0H0 3.5400, L1H0 3.7400 (clean 0.0080). "
                          "Directly, each part adds this much to the correct logit above the mean logit: L1H0 16.90, "
                          "L0H0 1.05, embed 0.01.")
    assert parts.check == (True, "L1H0, layer 1's head most on the previous token, writes the most")


def test_a_control_run_is_said_to_be_one_above_the_claims():
    """learned_pos's report told the no-position story with ✘ marks and no word that the model is a control, nor that
    its previous-token head is in layer 0."""
    def run_of(model: dict, data: dict | None = None, scores: dict | None = None) -> RunRecord:
        return RunRecord(Path("."), "run", scalars={tag: [(600, value)] for tag, value in (scores or {}).items()},
                         config={"model": model, "data": data or {"bos": True}})

    tutorial = {"n_layers": 2, "attn_only": True, "positional": "none"}
    looks_back_in_layer_1 = {"attention/prev_token_score/L0H0": 0.21, "attention/prev_token_score/L1H0": 0.68}
    assert departures(run_of(tutorial, scores=looks_back_in_layer_1)) == []
    looks_back_in_layer_0 = {"attention/prev_token_score/L0H0": 0.87, "attention/prev_token_score/L1H0": 0.19}
    learned = departures(run_of(tutorial | {"positional": "learned"}, scores=looks_back_in_layer_0))
    assert len(learned) == 2 and learned[0].startswith("This model has learned positional embeddings")
    assert learned[1].startswith("The head most on the previous token is L0H0 (0.870 of its attention on it; layer 1's "
                                 "most: 0.190)")
    assert departures(run_of(tutorial, data={"bos": False}))[0].startswith("These sequences have no BOS")
    assert departures(run_of(tutorial | {"n_layers": 1}))[0].startswith("This model has 1 layer, where the mechanism")
    assert departures(run_of(tutorial | {"attn_only": False}))[0].startswith("This model has MLPs")
    page = build_report(run_of(tutorial | {"positional": "learned"}, scores=looks_back_in_layer_1))
    notes = re.findall(r'<p class="note">([^<]*)</p>', page.split('id="algorithm"')[1])
    assert len(notes) == 1 and notes[0].startswith("This model has learned positional embeddings")


def test_the_default_run_has_no_note_above_its_claims(report):
    assert '<p class="note">' not in report.split('id="algorithm"')[1].split("<h2")[0]


def test_length_generalization_with_one_length_is_not_marked_failed():
    """learned_pos runs only its trained length: the report said '✘ does not hold (accuracy falls with length)'."""
    def length_claim(accs: dict[int, float]) -> object:
        run = RunRecord(Path("."), "run", scalars={f"length/acc_len{n}": [(600, a)] for n, a in accs.items()})
        return claims(run)[7]

    one = length_claim({10: 1.0})
    assert one.check is None and one.text.endswith("No other length was run, so there is no trend to check.")
    assert length_claim({10: 0.99, 20: 0.8, 40: 0.5}).check == (True, "accuracy falls with length")


def test_counting_holds_only_where_layer_0_gives_bos_more_than_uniform_attention():
    """no_bos's layer 0 stays uniform, which falls with position too: the claim was marked as holding."""
    def counting(by_pos: list[float]):
        scalars = {f"attention/bos_by_pos/L0H0/pos{i + 1}": [(600, w)] for i, w in enumerate(by_pos)}
        return claims(RunRecord(Path("."), "run", scalars=scalars, config={"model": {"n_ctx": 10}}))[1]

    uniform = [1 / (i + 1) for i in range(1, 10)]
    assert counting(uniform).check == (False, "BOS weight falls at every position and is on average ≥ uniform + 0.1 "
                                              "= 0.314")
    assert "on average 0.214 (uniform: 0.214)" in counting(uniform).text
    assert counting([min(1.0, w + 0.15) for w in uniform]).check[0]
    assert not counting([w + 0.15 for w in uniform[::-1]]).check[0]  # above uniform but rising: not a count


def test_runs_of_several_shapes_get_every_crossing_they_logged():
    """Across learned_pos and one_layer, learned_pos's L0H0 (prev-token 0.87 from step 50) showed "-" in the column
    that one_layer's last layer, layer 0, brought, as if it had not been measured."""
    def run_of(path: str, series: dict[str, list[float]], n_ctx: int) -> RunRecord:
        scalars = {tag: [(10 * i, v) for i, v in enumerate(values)] for tag, values in series.items()}
        return RunRecord(Path(path), "run", scalars=scalars, config={"model": {"n_ctx": n_ctx}})

    two_layers = run_of("logs/learned_pos/version_0", {"attention/prev_token_score/L0H0": [0.1, 0.3, 0.87],
                                                       "attention/prev_token_score/L1H0": [0.1, 0.2, 0.2],
                                                       "attention/bos_score/L0H0": [0.2, 0.3, 0.5]}, n_ctx=10)
    one_layer = run_of("logs/one_layer/version_0", {"attention/prev_token_score/L0H0": [0.1, 0.2, 0.25],
                                                    "attention/bos_score/L0H0": [0.2, 0.3, 0.5]}, n_ctx=20)
    html = build_summary([two_layers, one_layer])
    rows = {cells[0]: cells[1:] for cells in (re.findall(r"<td[^>]*>([^<]*)</td>", row)
                                               for row in html.split("<tr>")) if cells}
    header = re.findall(r"<th>([^<]*)</th>", html.split("term ranking")[1].split("</tr>")[0])
    at = {heading: (rows["learned_pos/version_0"][i + 1], rows["one_layer/version_0"][i + 1])
          for i, heading in enumerate(header)}
    assert at["prev-token attention (L1H0) ≥ 0.5"] == ("never", "-")
    assert at["prev-token attention (L0H0) ≥ 0.5"] == ("20", "never")  # filled in for the two-layer run
    # Uniform attention differs with n_ctx, so each run keeps its own BOS threshold's column.
    assert at["L0 attention to BOS (L0H0) ≥ 0.314"] == ("20", "-")
    assert at["L0 attention to BOS (L0H0) ≥ 0.237"] == ("-", "10")


def test_with_two_layer_0_heads_the_counting_claim_follows_the_one_most_on_bos():
    uniform = [1 / (i + 1) for i in range(1, 10)]
    counts = [min(1.0, w + 0.2) for w in uniform]
    scalars = {f"attention/bos_by_pos/L0H{h}/pos{i + 1}": [(600, w)] for h, weights in [(0, uniform), (1, counts)]
               for i, w in enumerate(weights)}
    scalars |= {f"attention/bos_score/L0H{h}": [(600, sum(w) / 9)] for h, w in [(0, uniform), (1, counts)]}
    claim = claims(RunRecord(Path("."), "run", scalars=scalars, config={"model": {"n_ctx": 10}}))[1]
    assert claim.text.startswith(f"Layer 0 (head 1, the one most on BOS) gives BOS attention {counts[0]:.3f} at a_1")
    assert claim.check[0]


def test_a_run_without_bos_says_a_0_where_the_scores_are_attention_to_its_first_token():
    """no_bos's report said "Layer 0 gives BOS attention 0.217 at a_1" of sequences that have no BOS; its "BOS"
    scores are attention to position 0, the first token a_0 (as its figures are labelled)."""
    uniform = [1 / (i + 1) for i in range(1, 10)]
    scalars = {f"attention/bos_by_pos/L0H{h}/pos{i + 1}": [(600, w)] for h in (0, 1) for i, w in enumerate(uniform)}
    scalars |= {f"attention/bos_score/L0H{h}": [(0, 0.2), (600, 0.214 + h / 100)] for h in (0, 1)}

    def run_of(bos: bool) -> RunRecord:
        return RunRecord(Path("."), "run", scalars=scalars, config={"model": {"n_ctx": 10}, "data": {"bos": bos}})

    counting = claims(run_of(bos=False))[1]
    assert counting.text.startswith("Layer 0 (head 1, the one most on a_0) gives a_0 (the first token: these "
                                    "sequences have no BOS) attention 0.500 at a_1")
    assert counting.check == (False, "a_0 weight falls at every position and is on average ≥ uniform + 0.1 = 0.314")
    labels = [row["label"] for row in crossings(run_of(bos=False))]
    assert labels == ["L0 attention to a_0 (L0H0)", "L0 attention to a_0 (L0H1)"]
    assert [row["label"] for row in crossings(run_of(bos=True))] == ["L0 attention to BOS (L0H0)",
                                                                       "L0 attention to BOS (L0H1)"]
    assert claims(run_of(bos=True))[1].text.startswith("Layer 0 (head 1, the one most on BOS) gives BOS attention")
    # Across runs one column holds both (each run's half of two columns stayed "-"), in the tutorial's words
    two = [RunRecord(Path(f"logs/{name}/version_0"), "run", scalars=scalars,
                     config={"model": {"n_ctx": 10}, "data": {"bos": name == "default"}})
           for name in ("default", "no_bos")]
    header = re.findall(r"<th>([^<]*)</th>", build_summary(two).split("term ranking")[1].split("</tr>")[0])
    assert [h for h in header if "L0 attention" in h] == ["L0 attention to BOS (L0H0) ≥ 0.314",
                                                          "L0 attention to BOS (L0H1) ≥ 0.314"]
    looks_back = {"attention/prev_token_score/L1H0": [(600, 0.287)], "attention/bos_score/L1H0": [(600, 0.1)]}
    prev_token = claims(RunRecord(Path("."), "run", scalars=looks_back, config={"data": {"bos": False}}))[2]
    assert prev_token.text.endswith("on the previous token, 0.100 on a_0.")


def test_runs_of_different_experiments_get_no_mean_or_spread():
    """The page across runs averaged default, learned_pos, no_bos and one_layer: a mean val acc of 0.74 of nothing."""
    def run_of(path: str, acc: float, **settings) -> RunRecord:
        model = {"n_layers": 2, "positional": "none", "init_seed": 0} | settings
        return RunRecord(Path(path), "run", scalars={"val/acc": [(600, acc)]},
                         config={"model": model, "data": {"bos": True, "seed": 0}})

    seeds = build_summary([run_of("s/seed_0", 0.9976), run_of("s/seed_1", 0.9974, init_seed=1)])
    assert "then their mean, standard deviation" in seeds and "<th>mean</th>" in seeds
    mixed = build_summary([run_of("default/version_0", 0.9975),
                           run_of("learned_pos/version_0", 1.0, positional="learned"),
                           run_of("one_layer/version_0", 0.2063, n_layers=1)])
    assert "<th>mean</th>" not in mixed
    assert "with no mean or spread across them: they differ in model.n_layers, model.positional, not only" in mixed


def test_the_composition_claim_names_the_layers_it_composes_with():
    """A one-layer run's claim 3 read "Layer 0's scores: recency (Q/K-composition with layer 0)"."""
    def title(layers: int) -> str:
        scalars = {f"attention/prev_token_score/L{l}H0": [(600, 0.5)] for l in range(layers)}
        return claims(RunRecord(Path("."), "run", scalars=scalars))[3].title

    assert "Layer 1's scores: recency (Q/K-composition with layer 0)" in title(2)
    assert "Layer 0's scores: recency (Q/K-composition with an earlier layer, which this model lacks)" in title(1)
    assert "Layer 2's scores: recency (Q/K-composition with layers 0-1)" in title(3)


def test_the_seeds_script_trains_each_seed_and_reports_across_them(tmp_path):
    """experiments/seeds.sh as the README runs it, on two tiny seeds: one run per seed, each said to be seeded so."""
    script = Path(__file__).resolve().parents[1] / "experiments" / "seeds.sh"
    tiny = ["--trainer.max_epochs=1", "--data.steps_per_epoch=2", "--data.batch_size=16", "--data.val_size=32",
            "--trainer.callbacks=[]", "--trainer.enable_model_summary=false"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "",  # its `python`, this one
           "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
    result = subprocess.run(["bash", str(script), "2", *tiny], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    seeds = tmp_path / "lightning_logs" / "seeds"
    assert [line for line in result.stderr.splitlines() if line.startswith("Seed set to")] == ["Seed set to 0",
                                                                                              "Seed set to 1"]
    weights = [torch.load(seeds / f"seed_{n}" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
               for n in (0, 1)]
    assert not torch.equal(weights[0]["model.embed.W_E"], weights[1]["model.embed.W_E"])
    html = (seeds / "report.html").read_text()
    assert re.search(r"<tr><td>val/acc</td>" + r'<td class="num">[\d.]+</td>' * 6, html)
    assert result.stdout.strip().endswith(f"wrote {Path('lightning_logs/seeds/report.html')}")
    # Another experiment's seeds in a folder of their own: they went to lightning_logs/seeds, and stopped at seed_0
    (tmp_path / "mine.yaml").write_text("model:\n  lr: 0.002\n")
    result = subprocess.run(["bash", str(script), "1", "--config", "mine.yaml", *tiny], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "lr: 0.002" in (tmp_path / "lightning_logs" / "seeds_mine" / "seed_0" / "config.yaml").read_text()
    assert sorted(p.name for p in seeds.iterdir()) == ["report.html", "seed_0", "seed_1"]


def test_the_seeds_table_ranks_the_terms_of_the_head_the_story_follows():
    """It took head 0's, though with several heads the story follows the one most on the previous token."""
    ranks = {"L1H0": {"direct": 1.0, "qk_comp": 2.0, "k_comp": 3.0, "q_comp": 4.0},
             "L1H1": {"direct": 4.0, "qk_comp": 3.0, "k_comp": 2.0, "q_comp": 1.0}}
    scalars = {f"qk_terms/zero_ablation_loss/{term}/{head}": [(100, value)]
               for head, terms in ranks.items() for term, value in terms.items()}
    scalars |= {"attention/prev_token_score/L1H0": [(100, 0.2)], "attention/prev_token_score/L1H1": [(100, 0.7)]}
    assert seeds._top_term(RunRecord(Path("run"), "run", scalars=scalars)) == "direct > qk_comp > k_comp > q_comp"


def test_the_timeline_table_says_whether_each_crossing_held():
    """learned_pos's layer-1 prev-token score crossed 0.5 at step 50 and ended at 0.178: listed as a part that formed."""
    scalars = {"attention/prev_token_score/L1H0": [(0, 0.1), (50, 0.539), (100, 0.178)],
               "ov/copy_top1/L1H0": [(0, 0.0), (50, 0.95), (100, 1.0)]}
    html = page._timeline(RunRecord(Path("run"), "run", scalars=scalars), b"png")
    rows = re.findall(r"<tr><td>([^<]*)</td>" + r'<td[^>]*>([^<]*)</td>' * 4 + "</tr>", html)
    assert sorted((step, final, said) for _, _, step, final, said in rows) == [("50", "0.178", "no: fell back"),
                                                                              ("50", "1", "yes")]


class _FailsAtStep20(AnalysisPlugin):
    def analyze(self, run) -> Findings:
        if run.step == 20:
            raise RuntimeError("no head 7")
        findings = Findings()
        findings.scalar("counter/epoch", run.epoch)  # a plugin's result, not Lightning's `epoch`
        return findings


def test_a_plugin_that_failed_and_its_own_tags_show_on_the_page(in_tmp):
    """The page said nothing of a plugin that failed, and filed a plugin's counter/epoch with the per-position
    values (a substring match on "epoch")."""
    with pytest.warns(PrevposWarning, match="plugin _FailsAtStep20 failed at step 20"):
        main(["fit", "--trainer.max_epochs=3", "--data.steps_per_epoch=10", "--data.val_size=64",
              "--data.probe_size=16", "--trainer.enable_progress_bar=false",
              f"--trainer.callbacks=[{__name__}._FailsAtStep20]"])
    run_dir = in_tmp / "lightning_logs" / "default" / "version_0"
    main(["report", str(run_dir)])
    html = (run_dir / "report.html").read_text()
    assert "plugin _FailsAtStep20 failed at step 20 and was skipped: RuntimeError(&#x27;no head 7&#x27;) (its " \
           "traceback: text plugin_errors/_FailsAtStep20 in TensorBoard)" in html
    final_metrics = html.split('id="final-metrics"')[1].split("</table>")[0]
    assert "<td>counter/epoch</td><td" in final_metrics and "<td>epoch</td>" not in final_metrics
