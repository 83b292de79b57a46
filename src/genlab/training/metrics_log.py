"""metrics.jsonl: one JSON record per line, appended during training.

Readers skip damaged lines (a kill can leave a half-written last line) and say how many; the resume
truncation writes a new file and renames it into place, so a kill at that moment never empties history.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from .checkpoint import describe_write_error

METRICS_FILE = "metrics.jsonl"


def read_records(path: Path) -> tuple[list[dict[str, Any]], int]:
    """(the well-formed records: JSON objects with an integer step, the number of damaged lines)."""
    if not path.is_file():
        return [], 0
    records, damaged = [], 0
    for line in path.read_bytes().decode("utf-8", "replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            damaged += 1
            continue
        step = record.get("step") if isinstance(record, dict) else None
        if not isinstance(step, int) or isinstance(step, bool):
            damaged += 1
            continue
        records.append(record)
    return records, damaged


def keep_up_to(path: Path, step: int) -> int:
    """Keep the records logged at or before `step` (atomically); returns the number of damaged lines
    dropped with them."""
    if not path.is_file():
        return 0
    records, damaged = read_records(path)
    temp = path.with_name(f".{path.name}.tmp")
    try:
        with open(temp, "w") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in records if r["step"] <= step)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot rewrite {path}: {describe_write_error(exc)}; it is unchanged") from exc
    return damaged
