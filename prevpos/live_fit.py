"""Is a fit training a run directory right now? Read from RUN_DIR/fit.lock, which the fit holds (prevpos/run_lock.py).
Light to import (no torch, no Lightning): `report` asks it too."""

import json
import os
import socket
from pathlib import Path

from prevpos.errors import ConfigError

LOCK = "fit.lock"


def training_now(run_dir) -> dict | None:
    """The lock's holder ({pid, host, started, ...}) if a fit on this machine, other than this process, is training
    `run_dir`. A lock left by a fit that died (kill -9, a crash) names a process that no longer exists, and is
    ignored. A fit on another machine cannot be checked from here: its lock is ignored too, so that a preempted job
    resumes on whichever node it gets."""
    try:
        holder = json.loads(Path(run_dir, LOCK).read_text())
        pid, host = int(holder["pid"]), holder["host"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if host == socket.gethostname() and pid != os.getpid() and _running(pid, holder.get("process_start")):
        return holder
    return None


def refuse_a_live_run(run_dir) -> None:
    """ConfigError if a fit is training `run_dir` right now (training_now)."""
    holder = training_now(run_dir)
    if holder is not None:
        raise ConfigError(f"{run_dir} is being trained right now, by process {holder['pid']} (started "
                          f"{holder.get('started')}): wait for it to end, or stop it, then resume (if no such fit is "
                          f"running, delete {Path(run_dir, LOCK)})")


def _running(pid: int, started_at: str | None) -> bool:
    """Is process `pid` alive, and the one that wrote the lock? After a crash and a reboot, or enough new processes,
    the id can belong to another process: where the start time can be read (Linux), it must match too."""
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        pass
    now = process_start(pid)
    return started_at is None or now is None or now == started_at


def process_start(pid: int) -> str | None:
    """When `pid` started, as Linux counts it (clock ticks since boot, field 22 of /proc/PID/stat); None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # after the command name, which may hold spaces; field 3 is [0]
