"""One run's report page: config and final metrics, timeline, the filled-in algorithm, figures over training."""

import yaml

from prevpos.report.departures import departures
from prevpos.report.html import esc, img, page, table
from prevpos.report.mechanisms import crossings, matching
from prevpos.report.run import RunRecord
from prevpos.report.snapshots import KEY_FIGURES, acc_at, snapshot_steps
from prevpos.report.story import claims
from prevpos.report.timeline import png_bytes, timeline_figure

# Folded away: long per-position lists (tags that hold these), and Lightning's own bookkeeping (whole tags: a
# plugin's counter/epoch is a result).
DETAIL_TAGS = ("/bos_by_pos/", "val/acc_pos", "test/acc_pos")
BOOKKEEPING_TAGS = ("epoch", "hp_metric")
# Where the head that learns to look back looks, at each step of the transition.
TRANSITION_FRAMES = "attention/mean_pattern/L{last}H*"


def build_report(run: RunRecord) -> str:
    timeline = png_bytes(timeline_figure(run)) if run.kind == "run" else None
    sections = [_overview(run), _timeline(run, timeline), _story(run, timeline), _snapshots(run), _frames(run),
                _all_figures(run)]
    return page(f"prevpos report: {run.path}", sections)


def is_detail(tag: str) -> bool:
    return tag in BOOKKEEPING_TAGS or any(part in tag for part in DETAIL_TAGS)


def _overview(run: RunRecord) -> str:
    notes = "".join(f'<p class="note">{esc(n)}</p>' for n in run.notes)
    source = (f"a training run ({run.logged_in})" if run.kind == "run"
              else "a `prevpos analyze` output (metrics.json: one snapshot, no timeline)")
    final = run.final
    main = [[tag, f"{final[tag]:.6g}"] for tag in sorted(final) if not is_detail(tag)]
    detail = [[tag, f"{final[tag]:.6g}"] for tag in sorted(final) if is_detail(tag)]
    last_step = max((series[-1][0] for series in run.scalars.values() if series), default=0)
    html = [f'<h2 id="run">Run</h2>{notes}<p>Read from {esc(source)}; last logged step {last_step}.</p>']
    if run.config:
        html.append(_config_table(run.config))
        html.append(f"<details><summary>config.yaml</summary><pre>{esc(yaml.safe_dump(run.config, sort_keys=False))}</pre></details>")
    html.append('<h3 id="final-metrics">Final metrics</h3>' + table(["tag", "final value"], main))
    if detail:
        html.append("<details><summary>per-position values</summary>" + table(["tag", "final value"], detail) + "</details>")
    return "\n".join(html)


def _config_table(config: dict) -> str:
    rows = [[f"{group}.{key}", value] for group in ("model", "data") for key, value in (config.get(group) or {}).items()]
    trainer = config.get("trainer") or {}
    rows += [[f"trainer.{k}", trainer.get(k)] for k in ("max_epochs", "max_steps", "precision", "gradient_clip_val")]
    logger = (trainer.get("logger") or {}).get("init_args", {}) if isinstance(trainer.get("logger"), dict) else {}
    rows += [["logger name", logger.get("name")], ["seed_everything", config.get("seed_everything")]]
    plugins = [c.get("class_path", "").rsplit(".", 1)[-1] for c in trainer.get("callbacks") or [] if isinstance(c, dict)]
    rows.append(["callbacks", ", ".join(plugins)])
    return table(["setting", "value"], [row for row in rows if row[1] not in (None, "")])


def _timeline(run: RunRecord, timeline: bytes | None) -> str:
    if timeline is None:
        return '<h2 id="timeline">Emergence timeline</h2><p class="missing">No timeline: this directory holds one snapshot.</p>'
    final = run.final
    # The final value beside the first crossing: a score that crossed and fell back (learned_pos's layer-1
    # prev-token score: 0.539 at step 50, 0.178 at the end) read as a part that formed.
    rows = [[r["label"], f"{r['threshold']:g}", "never" if r["step"] is None else r["step"], f"{final[r['tag']]:.3g}",
             "" if r["step"] is None else "yes" if final[r["tag"]] >= r["threshold"] else "no: fell back"]
            for r in crossings(run)]
    return ('<h2 id="timeline">Emergence timeline</h2>' + img(timeline, "mechanism scores and losses by training step")
            + "<p>The order in which the parts formed (first step at or above each threshold), and whether each "
              "held to the end:</p>"
            + table(["score", "threshold", "first step", "final", "held"], rows))


def _story(run: RunRecord, timeline: bytes | None) -> str:
    html = ['<h2 id="algorithm">How the model does it, with this run\'s numbers</h2>']
    html += [f'<p class="note">{esc(note)}</p>' for note in departures(run)]
    for claim in claims(run):
        text = f"<p>{esc(claim.text)}</p>" if claim.text else f'<p class="missing">{esc(claim.missing)}</p>'
        if claim.check is not None:
            holds, criterion = claim.check
            text += f'<p class="{"holds" if holds else "fails"}">{"✔ holds" if holds else "✘ does not hold"} in this run ({esc(criterion)})</p>'
        figs = []
        for pattern in claim.figures:
            if pattern == "__timeline__":
                figs += [img(timeline, "timeline (above)", 420)] if timeline else []
                continue
            figs += [img(run.image_at(tag), f"{tag} (end)", 380) for tag in matching(run, pattern, images=True)]
        html.append(f'<div class="claim"><div class="text"><h3>{esc(claim.title)}</h3>{text}</div>'
                    f'<div class="figs">{"".join(figs)}</div></div>')
    return "\n".join(html)


def _snapshots(run: RunRecord) -> str:
    tags = [t for pattern in KEY_FIGURES for t in matching(run, pattern, images=True)]
    if run.kind != "run" or not tags:
        return ""
    steps = snapshot_steps(run, [s for s, _ in run.images[tags[0]]])
    header = ["figure"] + [f"{name}: {_step_caption(run, s)}" for name, s in steps.items()]
    rows = _image_rows(run, tags, list(steps.values()), lambda tag, s: f"{tag} @ {s}", 260)
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    return (f'<h2 id="snapshots">Key figures before, during and after the transition</h2>'
            f"<p>Steps chosen from val accuracy.</p><table><tr>{head}</tr>{rows}</table>")


def _frames(run: RunRecord) -> str:
    """The last layer's mean attention at every step drawn from just before the transition to just after it: the
    previous-token diagonal forming, frame by frame (the plugins draw figures every 2 epochs while it forms)."""
    tags = matching(run, TRANSITION_FRAMES, images=True) if run.kind == "run" else []
    if not tags:
        return ""
    steps = snapshot_steps(run, [s for s, _ in run.images[tags[0]]])
    if "before" not in steps:  # no transition in this run (it never learned, or had learned before its first figure)
        return ""
    frames = [s for s, _ in run.images[tags[0]] if steps["before"] <= s <= steps["after"]]
    if len(frames) < 3:
        return ""
    rows = _image_rows(run, tags, frames, lambda tag, s: _step_caption(run, s), 180)
    return (f'<h2 id="frames">The transition, frame by frame</h2><p>Every figure step from {frames[0]} to '
            f"{frames[-1]}.</p><table>{rows}</table>")


def _image_rows(run: RunRecord, tags: list[str], steps: list[int], caption, width: int) -> str:
    """A table row per tag: its image at each step (an empty cell where it has none), captioned caption(tag, step)."""
    return "".join("<tr><td>" + esc(tag) + "</td>" + "".join(
        f"<td>{img(png, caption(tag, s), width) if (png := run.image_at(tag, s)) else ''}</td>" for s in steps)
                   + "</tr>" for tag in tags)


def _step_caption(run: RunRecord, step: int) -> str:
    acc = acc_at(run, step)
    return f"step {step}" + ("" if acc is None else f", val acc {acc:.3f}")


def _all_figures(run: RunRecord) -> str:
    figs = "".join(img(run.image_at(tag), tag, 380) for tag in sorted(run.images))
    return (f'<h2 id="figures">Every figure at the end</h2><details><summary>{len(run.images)} figures</summary>'
            f'<div class="figs" style="display:flex;flex-wrap:wrap;gap:.5em">{figs}</div></details>')
