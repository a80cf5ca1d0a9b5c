"""The names of a CSV-logged run's figures and text files (RUN_DIR/figures/<tag>/step_000020.png): written by the
run's sinks (prevpos/analysis/sinks.py), read by `report` and trimmed by a resume; `analyze` names its <tag>.png the
same way; run folders in number order, and the run a file is in. Imports nothing heavy: `report` reads runs
without torch."""

import re
from pathlib import Path

FIGURES, TEXTS = "figures", "texts"  # a CSV run's folders of PNGs and of text, beside its metrics.csv
# The commands that log an evaluation in a folder named after them, <run or lightning_logs/NAME>/<command>/version_N
# (prevpos/evaluation.py), never a training run.
EVALUATIONS = ("validate", "test")


def tag_path(folder: Path, tag: str) -> Path:
    """FOLDER/<tag>, a tag's '/' as folders, always inside FOLDER: a plugin's tag such as "/x" or "../x" would
    otherwise name a file outside the run (empty, '.' and '..' parts are dropped)."""
    return folder.joinpath(*(part for part in tag.split("/") if part not in ("", ".", "..")))


def step_file(folder: Path, tag: str, step: int, suffix: str) -> Path:
    """FOLDER/<tag>/step_000020.png: zero-padded, so a file browser lists a figure's steps in order."""
    return tag_path(folder, tag) / f"step_{step:06d}{suffix}"


def file_step(path: Path) -> int | None:
    """The step of a step_file's name; None for any other file."""
    digits = path.stem.removeprefix("step_")
    return int(digits) if path.stem.startswith("step_") and digits.isdigit() else None


def in_number_order(paths: list[Path]) -> list[Path]:
    """version_2 before version_10: a shell glob (`report lightning_logs/default/version_*`) sorts them as text."""
    def key(path: Path) -> list:
        return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]

    return sorted(paths, key=key)


def evaluation_logged_in(folder: Path) -> str | None:
    """`validate` or `test`, if FOLDER is a version folder that command logged in (EVALUATIONS)."""
    return folder.parent.name if folder.parent.name in EVALUATIONS else None


def run_holding(path: Path) -> Path | None:
    """The run directory (the nearest folder above with a config.yaml) that a file such as a checkpoint is in."""
    return next((parent for parent in path.parents if (parent / "config.yaml").is_file()), None)
