"""`python -m prevpos analyze --weights FILE --out DIR`: every analysis plugin once on a saved model (never overwrites)."""

import inspect
import os
import re
import shutil
import textwrap
from pathlib import Path
from typing import Optional

from jsonargparse import ArgumentParser

from prevpos.data import PrevTokenData
from prevpos.errors import ConfigError, check_seed

DESCRIPTION = """Run every analysis plugin once on a saved model; write DIR/metrics.json, one DIR/<tag>.png per figure,
DIR/config.yaml and TensorBoard events in DIR/tensorboard. FILE is a checkpoint saved by `python -m prevpos fit` or a
raw TransformerLens state_dict (the public tutorial's format; its shape is read off its tensors). The probe is the
run's own (its size, seed and tokens: with or without BOS, data.n_tokens), read from the checkpoint, so the numbers
are those the run logged at the checkpoint's step; a raw state_dict gets fit's defaults."""


# What to pass for a missing required option (argparse says only "the following arguments are required: weights").
REQUIRED = {"weights": "--weights FILE (a checkpoint of a fit, e.g. lightning_logs/default/version_0/checkpoints/"
                       "last.ckpt)",
            "out": "--out DIR (a new directory for the results)"}


class _OneLineParser(ArgumentParser):
    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error:  # jsonargparse's nested parsers raise and retry
            return super().error(message, ex)
        missing = re.fullmatch(r"the following arguments are required: (.*)", " ".join(message.split()))
        if missing:
            message = "needs " + " and ".join(REQUIRED.get(name, f"--{name}") for name in missing.group(1).split(", "))
        raise ConfigError(f"analyze: {' '.join(message.split())} (`python -m prevpos analyze --help` lists the options)")


def build_parser() -> ArgumentParser:
    parser = _OneLineParser(prog="python -m prevpos analyze", description=DESCRIPTION)
    probe = inspect.signature(PrevTokenData).parameters  # fit's probe defaults, kept in one place
    runs = "default: the run's, from its checkpoint; for a raw state_dict"
    parser.add_argument("--weights", type=str, required=True, metavar="FILE",
                        help="Lightning .ckpt or TransformerLens state_dict file.")
    parser.add_argument("--out", type=str, required=True, metavar="DIR", help="Output directory: new or empty.")
    parser.add_argument("--probe_size", type=Optional[int], default=None,
                        help=f"Sequences in the probe batch ({runs} {probe['probe_size'].default}).")
    parser.add_argument("--probe_seed", type=Optional[int], default=None,
                        help=f"Seed of the probe batch ({runs} {probe['probe_seed'].default}).")
    parser.add_argument("--notebook_probe", type=Optional[bool], default=None,
                        help="Draw the probe as the tutorial did: manual_seed(seed); randint(0, d_vocab); BOS in col 0 "
                             f"({runs} {probe['notebook_probe'].default}).")
    parser.add_argument("--plugins", type=str, nargs="+", default=None, metavar="NAME",
                        help="Short names of the plugins to run, e.g. --plugins OVCircuit AttentionEntropy (or "
                             "OVCircuit,AttentionEntropy), or class paths, e.g. mymodule.MyPlugin (default: every "
                             "discovered plugin).")
    return parser


def main(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    if args.probe_size is not None and args.probe_size < 1:
        raise ConfigError(f"--probe_size={args.probe_size}: must be at least 1")
    if args.probe_seed is not None:
        check_seed("--probe_seed", args.probe_seed)
    out = _fresh_dir(Path(args.out))
    import torch

    from prevpos.analysis.offline import analyze_offline, draw_figures, write_findings
    from prevpos.analysis.probe_memory import refuse_a_probe_too_big
    from prevpos.weights import data_settings_of, epochs_of, model_of, read_weights_file, refuse_non_finite

    saved = read_weights_file(args.weights)  # once: the model, the run's data and its epochs all come from it
    model, hparams, step = model_of(saved, Path(args.weights))
    refuse_non_finite(model, args.weights)
    probe = the_runs_probe(model.cfg, *data_settings_of(saved, Path(args.weights)), args)
    refuse_a_probe_too_big(model, probe.probe_size, torch.device(model.cfg.device), "--probe_size")
    # `--plugins A,B` as well as `--plugins A B`: fit's lists are written with commas, `[A,B]`
    plugins = args.plugins and [name for given in args.plugins for name in given.split(",") if name]
    findings = analyze_offline(model, probe, plugins, step, epochs_of(saved))
    settings = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    drawn = draw_figures(findings)
    _write_whole(out, lambda folder: write_findings(findings, drawn, folder, step, {
        "analyze": settings, "step": step, "model": hparams, "data": probe.data_settings()}))
    for tag, text in findings.texts.items():
        print(f"{tag}:\n{textwrap.indent(text.strip(), '  ')}")
    figures = f"{len(drawn)} figure{'' if len(drawn) == 1 else 's'}"
    print(f"probe loss {findings.scalars['probe/loss']:.4f}, acc {findings.scalars['probe/acc']:.4f} (step {step}); "
          f"wrote {len(findings.scalars)} scalars to {out / 'metrics.json'}, {figures} as {out}/<tag>.png, "
          f"TensorBoard events to {out / 'tensorboard'}")


def the_runs_probe(cfg, saved: dict, source: str | None, args) -> PrevTokenData:
    """The data the run drew its probe from (`saved`, from `source`), but for the probe options given; said in one
    line, so the numbers can be matched with the run's."""
    given = {key: getattr(args, key) for key in ("probe_size", "probe_seed", "notebook_probe")
             if getattr(args, key) is not None}
    if not saved.get("bos", True) and given.get("notebook_probe", saved.get("notebook_probe")):
        said = ("--notebook_probe true" if given.get("notebook_probe") else
                "the run's data.notebook_probe true (saved before prevpos refused it)")
        fix = "leave it out" if given.get("notebook_probe") else "pass --notebook_probe false"
        raise ConfigError(f"{said}: the tutorial's sample begins every sequence with BOS, and the run trained without "
                          f"it (data.bos false); {fix}")
    data = PrevTokenData(**{**saved, **given}, n_ctx=cfg.n_ctx, d_vocab=cfg.d_vocab)
    tokens = "the tutorial's sample" if data.notebook_probe else (
        f"tokens 0..{data.n_tokens - 1}{'' if data.bos else ', no BOS'}")
    origin = f"the run's settings, from {source}" if source else "fit's defaults"
    if given:
        origin += f", but {', '.join(f'--{key} {value}' for key, value in given.items())}"
    print(f"probe: {data.probe_size} sequences, seed {data.probe_seed}, {tokens} ({origin})")
    return data


def _write_whole(out: Path, write) -> None:
    """write(folder) into a hidden folder beside `out`, renamed to `out` once complete: an analyze stopped while
    writing (Ctrl-C) leaves no half-written `out`, which the next one would refuse as not empty."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    try:
        write(partial)
        os.replace(partial, out)  # `out` is absent or an empty directory (_fresh_dir), which a rename replaces
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _fresh_dir(out: Path) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "a directory that is not empty" if out.is_dir() else "a file"
        raise ConfigError(f"--out {out}: exists, {what}; pick a new directory (analyze never overwrites files)")
    # Before the analyses, not after them: the write refused "File exists" once they were done.
    blocking = next((parent for parent in out.parents if parent.exists() and not parent.is_dir()), None)
    if blocking is not None:
        raise ConfigError(f"--out {out}: {blocking} is a file, not a folder; pick a directory whose parents are "
                          "folders")
    return out
