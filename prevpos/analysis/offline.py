"""Run the analysis plugins once on a model outside training, and write what they found to files."""

import json
import traceback
from pathlib import Path

import yaml
from matplotlib.figure import Figure
from transformer_lens import HookedTransformer

from prevpos.analysis.findings import Findings
from prevpos.analysis.plugin import AnalysisPlugin
from prevpos.analysis.probe import ProbeRun, analysis_mode
from prevpos.data import PrevTokenData
from prevpos.errors import ConfigError
from prevpos.notices import warn
from prevpos.step_files import tag_path


def analyze_offline(model: HookedTransformer, probe: PrevTokenData, names: list[str] | None = None,
                    step: int = 0, epoch: int = 0) -> Findings:
    """probe/loss, probe/acc and every selected plugin's findings on one shared ProbeRun of `probe`'s probe (a
    failing plugin is reported once and skipped, as in training)."""
    from prevpos.registry import class_path_here, discover_plugins

    plugins = discover_plugins()
    chosen = {name: plugins.get(name) or _by_class_path(name) for name in names or sorted(plugins)}
    unknown = sorted(name for name, cls in chosen.items() if cls is None)
    if unknown:
        here = [path for path in map(class_path_here, unknown) if path]
        hint = f"; a file here defines it: --plugins {' '.join(here)}" if here else ""
        raise ConfigError(f"--plugins: no plugin named {', '.join(unknown)} (known: {', '.join(sorted(plugins))}; "
                          f"or a class path, e.g. mymodule.MyPlugin{hint})")
    built = [plugin for name, cls in chosen.items() if (plugin := _built(name, cls, named=bool(names)))]
    findings = Findings()
    with analysis_mode(model):
        run = ProbeRun(model, probe.probe_tokens().to(model.cfg.device), step, epoch, n_tokens=probe.n_tokens)
        findings.scalar("probe/loss", run.loss)
        findings.scalar("probe/acc", run.acc)
        for plugin in built:
            result = plugin.analyze_safely(run)
            if result is not None:
                findings.update(result)
    return findings


def _built(name: str, cls: type, named: bool) -> AnalysisPlugin | None:
    """cls() (analyze runs each plugin with its defaults). One that needs a setting was a TypeError traceback; now
    ConfigError if --plugins named it, else (one of every plugin found) None, with a warning."""
    try:
        return cls()
    except TypeError as error:
        why = f"cannot be built without arguments ({error}); analyze runs each plugin with its defaults"
        if named:
            raise ConfigError(f"--plugins {name}: {why}: give that setting a default") from None
        warn(f"plugin {name} left out: it {why}")
        return None


def _by_class_path(name: str) -> type | None:
    """The plugin class that a class path such as `mymodule.MyPlugin` names (fit's trainer.callbacks takes those
    too), or None; ConfigError with the reason if its module does not import."""
    import importlib

    module, _, attribute = name.rpartition(".")
    if not module:
        return None
    try:
        cls = getattr(importlib.import_module(module), attribute, None)
    except Exception as error:  # the user's module: any error in it
        raise ConfigError(f"--plugins {name}: cannot import {module} ({type(error).__name__}: "
                          f"{' '.join(str(error).split())})") from None
    return cls if isinstance(cls, type) and issubclass(cls, AnalysisPlugin) else None


def draw_figures(findings: Findings) -> dict[str, Figure]:
    """Each figure of `findings` drawn, by tag; one that cannot be drawn is left out, with its traceback (`analyze`
    is how a plugin's author tries its figures: the first such error stopped it, with nothing written)."""
    figures = {}
    for tag, spec in findings.figures.items():
        try:
            figures[tag] = spec.draw()
        except Exception as error:
            warn(f"figure {tag} could not be drawn and is left out: {error!r}\n"
                 f"{''.join(traceback.format_exception(error))}")
    return figures


def write_findings(findings: Findings, figures: dict[str, Figure], out: Path, step: int, config: dict) -> None:
    """metrics.json, one PNG per figure at out/<tag>.png, config.yaml, and TensorBoard events in out/tensorboard."""
    from torch.utils.tensorboard import SummaryWriter

    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(findings.scalars, indent=1, sort_keys=True))
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with SummaryWriter(str(out / "tensorboard")) as tensorboard:
        for tag, value in findings.scalars.items():
            tensorboard.add_scalar(tag, value, step)
        for tag, text in findings.texts.items():
            tensorboard.add_text(tag, text, step)
        for tag, figure in figures.items():
            png = tag_path(out, tag + ".png")
            png.parent.mkdir(parents=True, exist_ok=True)
            figure.savefig(png)
            tensorboard.add_figure(tag, figure, step, close=True)
