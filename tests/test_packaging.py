"""What `pip install .` (not -e) installs: a wheel holds the packages pyproject.toml lists, and only those."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_in_the_wheel():
    """The list held only prevpos and prevpos_plugins: a wheel had 48 files and no prevpos.analysis, report, ..."""
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    folders = sorted("prevpos" + "".join(f".{part}" for part in init.parent.relative_to(ROOT / "prevpos").parts)
                     for init in (ROOT / "prevpos").rglob("__init__.py"))
    assert sorted(name for name in listed if name.startswith("prevpos.") or name == "prevpos") == folders
    assert "prevpos_plugins" in listed
