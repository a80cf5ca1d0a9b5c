"""Find analysis plugins: every module of the built-in plugins/ package and every `prevpos.plugins` entry point."""

import importlib
import pkgutil
import re
from importlib.metadata import entry_points
from pathlib import Path

from prevpos.analysis.plugin import AnalysisPlugin

ENTRY_POINT_GROUP = "prevpos.plugins"


def discover_plugins() -> dict[str, type[AnalysisPlugin]]:
    """Import every plugin module, then return {short class name: class} for all AnalysisPlugin subclasses.

    Importing is what lets jsonargparse resolve short names like `OVCircuit` in YAML and on the command line.
    """
    import prevpos_plugins

    for module in pkgutil.iter_modules(prevpos_plugins.__path__):
        importlib.import_module(f"prevpos_plugins.{module.name}")
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        entry_point.load()
    return {cls.__name__: cls for cls in _subclasses(AnalysisPlugin)}


def class_path_here(name: str) -> str | None:
    """`plugins.entropy.AttentionEntropy` where ./plugins/entropy.py (or ./X.py) defines class `name`: a plugin saved
    in the working directory, which short names do not reach (only prevpos's own plugins/ and entry points do)."""
    for file in sorted([*Path().glob("*.py"), *Path("plugins").glob("*.py")]):
        try:
            defines = re.search(rf"^class {re.escape(name)}\b", file.read_text(errors="replace"), re.MULTILINE)
        except OSError:
            continue
        if defines:
            return ".".join([*file.with_suffix("").parts, name])
    return None


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return [c for c in found if not c.__name__.startswith("_")]


def drop_repeated_plugins(callbacks: list) -> list[str]:
    """Keep only the last of an analysis plugin given more than once in a config's trainer.callbacks, in place; the
    names of those dropped. `--trainer.callbacks+=AttentionPatterns --trainer.callbacks.figure_every_n_epochs=1`
    (the way to change a default plugin's settings on the command line) ran both it and the default one: every
    analysis twice, every figure twice at the same step."""
    paths = {f"{cls.__module__}.{cls.__qualname__}" for cls in discover_plugins().values()}
    last = {entry.class_path: i for i, entry in enumerate(callbacks) if getattr(entry, "class_path", None) in paths}
    dropped = [i for i, entry in enumerate(callbacks) if getattr(entry, "class_path", None) in paths
               and last[entry.class_path] != i]
    names = [callbacks[i].class_path.rsplit(".", 1)[-1] for i in dropped]
    for i in reversed(dropped):
        del callbacks[i]
    return names
