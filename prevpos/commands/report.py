"""`python -m prevpos report RUN_DIR [RUN_DIR ...]`: one HTML page telling a run's story (or several runs' spread)."""

import argparse
import os
import sys
from pathlib import Path

from prevpos.commands.one_line import OneLineParser
from prevpos.errors import ConfigError
from prevpos.step_files import in_number_order

DESCRIPTION = """Write RUN_DIR/report.html from a run (lightning_logs/<name>/version_N; one still training is shown as
far as it got, and the page says so) or a `prevpos analyze` output directory: config, final metrics, emergence
timeline, the algorithm filled in with the run's numbers, key figures over training. Several RUN_DIRs (e.g. the seeds: lightning_logs/seeds/seed_*) give one page with the spread of
the mechanism scores across them, written to their common parent directory. Only report.html is written, and an
existing report.html is overwritten only if `prevpos report` wrote it."""


def parse(argv: list[str]) -> argparse.Namespace:
    parser = OneLineParser(prog="python -m prevpos report", description=DESCRIPTION)
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", type=Path)
    parser.add_argument("--out", help="the HTML file to write, or a directory to write report.html in (default: "
                                      "RUN_DIR/report.html, or report.html in the common parent of several RUN_DIRs)")
    return parser.parse_args(argv)


def report_file(out: str | None, default: Path) -> Path:
    """The file `--out` names: report.html inside a directory (an existing one, or one written with a trailing /)."""
    if out is None:
        return default
    file = Path(out) / "report.html" if out.endswith(("/", os.sep)) or Path(out).is_dir() else Path(out)
    if not file.parent.is_dir():
        raise ConfigError(f"--out {out}: the directory {file.parent} does not exist; create it first")
    return file


def _as_given(folder: Path) -> Path:
    """`folder` relative to the working directory if it lies in it, as the run directories are usually given."""
    here = Path.cwd()
    return folder.relative_to(here) if folder.is_relative_to(here) else folder


def once_each(paths: list[Path]) -> list[Path]:
    """`paths` in their order, without a second spelling of one already there."""
    seen: set[Path] = set()
    return [path for path in paths if not (path.resolve() in seen or seen.add(path.resolve()))]


def main(argv: list[str]) -> None:
    args = parse(argv)
    from prevpos.report.html import write_report, written_by_report
    from prevpos.report.page import build_report
    from prevpos.report.run import read_run, read_runs
    from prevpos.report.seeds import build_summary

    live = None
    args.run_dirs = once_each(args.run_dirs)  # `report RUN RUN/` made a table of one run twice, over RUN's own page
    if len(args.run_dirs) == 1:
        default = args.run_dirs[0] / "report.html"
        run = read_run(args.run_dirs[0])
        live = run.training_now
        text = build_report(run)
    else:
        # A shell glob of the runs (lightning_logs/seeds/*) also lists the page the last such command wrote there.
        args.run_dirs = [path for path in args.run_dirs if not (path.is_file() and written_by_report(path))]
        default = _as_given(Path(os.path.commonpath([p.resolve() for p in args.run_dirs]))) / "report.html"
        runs, unreadable = read_runs(in_number_order(args.run_dirs))
        for error in unreadable:  # one run that died at its start must not cost the table of the other nineteen
            print(f"prevpos: report: skipped {error}", file=sys.stderr)
        text = build_summary(runs, [str(error) for error in unreadable])
    out = report_file(args.out, default)
    write_report(out, text, other_file_hint="pass another --out FILE" if args.out else "pass --out FILE")
    print(f"wrote {out}" + (f"; {live}" if live else ""))
