"""Read an offline W&B run's records, for tests: its .wandb file is LevelDB's log format (32 KiB blocks of records,
each with a 7-byte header) holding W&B's Record protobufs."""

import struct
import time
from pathlib import Path

BLOCK = 32768


def wandb_records(run_file: Path) -> list:
    from wandb.proto import wandb_internal_pb2

    data, records, pos, record = run_file.read_bytes(), [], 7, b""  # after the file's own 7-byte header
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        record = chunk if kind in (1, 2) else record + chunk  # 1 whole, 2 first, 3 middle, 4 last
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(record))
    return records


def wandb_history(run_file: Path) -> list[dict[str, str]]:
    """The run's history rows, as {key: value JSON} (a nested key joined with '/')."""
    return [{"/".join(item.nested_key) or item.key: item.value_json for item in record.history.item}
            for record in wandb_records(run_file) if record.WhichOneof("record_type") == "history"]


def wandb_run(run_file: Path, wait_s: float = 10.0):
    """The run record: id, display_name, project. Waits up to `wait_s` for it: once, in a full test run, a session's
    file had no run record yet when read (W&B's writer is a process of its own)."""
    deadline = time.monotonic() + wait_s
    while True:
        runs = [record.run for record in wandb_records(run_file) if record.WhichOneof("record_type") == "run"]
        if runs or time.monotonic() > deadline:
            return next(iter(runs))
        time.sleep(0.2)
