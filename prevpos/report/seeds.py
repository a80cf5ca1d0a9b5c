"""A report across several runs (e.g. seeds): each mechanism score's spread, and whether the same algorithm formed."""

import statistics
from collections.abc import Sequence

from matplotlib.figure import Figure

from prevpos.report.html import esc, img, page, table
from prevpos.report.mechanisms import crossings, first_crossing, matching, per_run_threshold
from prevpos.report.run import RunRecord
from prevpos.report.story import TERMS, followed_head
from prevpos.report.timeline import png_bytes

COLUMNS = ["val/acc", "val/loss", "test/acc", "probe/acc", "attention/bos_score/L0H*",
           "attention/prev_token_score/L{last}H*", "ov/copy_top1/L{last}H*",
           *(f"qk_terms/zero_ablation_loss/{t}*" for t in TERMS),
           "explanation/restricted_recovered", "explanation/excluded_recovered", "explanation/algorithm_recovered",
           "adversarial/repeated_pairs/loss", "adversarial/no_bos/loss", "length/acc_len*"]


def values_table(runs: list[RunRecord]) -> tuple[list[str], list[list]]:
    """Columns present in any run, and one row of final values (None where absent) per run."""
    tags = []
    for pattern in COLUMNS:
        for run in runs:
            tags += [t for t in matching(run, pattern) if t not in tags]
    return tags, [[run.final.get(t) for t in tags] for run in runs]


def spread(rows: list[list]) -> dict[str, list]:
    columns = [[v for v in col if v is not None] for col in zip(*rows)]
    stats = {"mean": statistics.fmean, "std": lambda c: statistics.stdev(c) if len(c) > 1 else None, "min": min,
             "max": max}  # no spread from one value: "-", not 0
    return {name: [fn(c) if c else None for c in columns] for name, fn in stats.items()}


def differing_settings(runs: list[RunRecord]) -> list[str]:
    """The model.* and data.* settings, seeds aside, that differ between runs whose config.yaml was read."""
    settings = [{f"{group}.{key}": value for group in ("model", "data")
                 for key, value in ((run.config or {}).get(group) or {}).items() if "seed" not in key}
                | {"data.n_tokens": run.n_tokens}  # null in a fit's config, resolved in an analyze's
                for run in runs if run.config]
    # A setting some configs lack is unknown there, not different (an analyze output records only the probe's data).
    keys = sorted(set.intersection(*(set(one) for one in settings))) if settings else []
    return [key for key in keys if len({repr(one[key]) for one in settings}) > 1]


def run_labels(runs: list[RunRecord]) -> list[str]:
    """A column name per run: the last parts of its path, as few as tell the runs apart (`version_0` for seeds of
    one experiment, `two_heads/version_0` and `default/version_0` across experiments)."""
    parts = [run.path.resolve().parts for run in runs]
    for k in range(1, max(map(len, parts)) + 1):
        labels = ["/".join(p[-k:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [str(run.path) for run in runs]  # the same directory given twice


def _seed(run: RunRecord, group: str, key: str):
    return ((run.config or {}).get(group) or {}).get(key, "?")


def _top_term(run: RunRecord) -> str:
    """The zero-ablated terms, most important first, of the head the run's story follows (with several heads in
    the last layer, the one most on the previous token, not always head 0)."""
    head = followed_head(run, run.final)
    losses = {t: run.final[tags[0]] for t in TERMS
              if (tags := matching(run, f"qk_terms/zero_ablation_loss/{t}/{head}")
                  or matching(run, f"qk_terms/zero_ablation_loss/{t}"))}
    return " > ".join(sorted(losses, key=losses.get, reverse=True)) if losses else "-"


def _curves(runs: list[RunRecord], labels: list[str]) -> Figure:
    fig = Figure(figsize=(10, 3.6), dpi=80, layout="constrained")
    axes = fig.subplots(1, 2, sharex=True)
    for ax, (pattern, title) in zip(axes, [("val/acc", "val accuracy"),
                                           ("attention/prev_token_score/{head}", "last layer's prev-token score")]):
        for run, label in zip(runs, labels):
            for tag in matching(run, pattern.replace("{head}", followed_head(run, run.final)))[:1]:
                ax.plot(*zip(*run.scalars[tag]), marker=".", label=label)
        ax.set(title=title, xlabel="training step", ylim=(-0.03, 1.03))
    if axes[0].lines:
        axes[0].legend(fontsize=7)
    return fig


def _crossing_steps(runs: list[RunRecord]) -> tuple[list[str], list[dict[str, int | None]]]:
    """The crossing columns (score and threshold) and each run's first step in them. A column that one run follows
    (a one-layer run's L0H0 prev-token score) is filled in for every run that logged its tag, not left "-"."""
    def heading(crossing: dict) -> str:
        return f"{crossing['label']} ≥ {crossing['threshold']:g}"

    # a snapshot crossed nothing; one column per score across runs with and without BOS (own_words=False)
    per_run = [crossings(run, own_words=False) if run.kind == "run" else [] for run in runs]
    columns = {heading(c): (c["tag"], c["threshold"]) for rows in per_run for c in rows}
    steps = []
    for run, rows in zip(runs, per_run):
        own = {heading(c): c["step"] for c in rows}
        for column, (tag, threshold) in columns.items():
            if column not in own and tag in run.scalars and not per_run_threshold(tag) and run.kind == "run":
                own[column] = first_crossing(run.scalars[tag], threshold)
        steps.append(own)
    return list(columns), steps


def build_summary(runs: list[RunRecord], skipped: Sequence[str] = ()) -> str:
    """The page across runs; `skipped`: a line for each run directory given that could not be read."""
    fmt = lambda v: "-" if v is None else f"{v:.4g}"  # noqa: E731
    labels = run_labels(runs)
    tags, rows = values_table(runs)
    differ = differing_settings(runs)
    stats = spread(rows) if rows and not differ else {}  # a mean over different experiments means nothing
    # One row per score (they are many), one column per run, then the spread.
    by_tag = [[tag] + [fmt(row[i]) for row in rows] + [fmt(col[i]) for col in stats.values()] for i, tag in enumerate(tags)]
    seeds = [[f"{group}.{key}"] + [_seed(run, group, key) for run in runs] + [""] * len(stats)
             for group, key in [("model", "init_seed"), ("data", "seed")]]
    crossed, steps = _crossing_steps(runs)
    order = [[label, _top_term(run)] + [s.get(k, "-") if s.get(k, "-") is not None else "never" for k in crossed]
             for run, label, s in zip(runs, labels, steps)]
    then = ("then their mean, standard deviation, minimum and maximum" if stats else
            f"with no mean or spread across them: they differ in {', '.join(differ)}, not only in their seeds")
    sections = [
        f"<p>{len(runs)} runs: {esc(', '.join(str(r.path) for r in runs))}. Final values of each run, {esc(then)}.</p>",
        table(["score", *labels, *stats], seeds + by_tag),
        "<h2>Did every run learn the same algorithm?</h2><p>Ranking of the zero-ablated score terms (most "
        "important first) and the first step each score crossed its threshold:</p>",
        table(["run", "term ranking", *crossed], order, numeric_from=2),
        img(png_bytes(_curves(runs, labels)), "val accuracy and prev-token score of every run"),
    ]
    for run, label in zip(runs, labels):
        sections += [f'<p class="note">{esc(label)}: {esc(n)}</p>' for n in run.notes]
    sections += [f'<p class="note">skipped {esc(reason)}</p>' for reason in skipped]
    return page(f"prevpos report across {len(runs)} runs", sections)
