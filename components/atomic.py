"""Writing a local file so that readers see the old content or the new, never a torn one.

Every JSON and text file the pipeline leaves for a later run (metadata.json, config.json,
report.json, checkpoints, resume keys) goes through here: the bytes are written to a temporary
file in the same folder, flushed to the disk, and renamed over the target (one atomic step on
POSIX filesystems), and the folder entry is flushed too. A write that fails, a full disk
included, removes its temporary file, so a retry does not find the disk fuller than before.
A kill mid-write leaves a `.*.tmp` file; `sweep` removes those older than an hour (checkpoint
saves call it for their folder, where a full disk would otherwise stay full).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

TEMP_SUFFIX = ".tmp"
STALE_SECONDS = 3600.0  # a temporary file this old belongs to a writer that died


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `path`; on a clean exit it replaces `path`, else is removed.

    The caller writes the temporary file (and may fsync it; `write_bytes` does). Nothing is left
    behind on failure, whatever the exception.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}{TEMP_SUFFIX}")
    try:
        yield temp
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _sync_folder(target.parent)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replaces `path` with `data` atomically and durably."""
    with replacing(path) as temp:
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, value: object, **dumps: object) -> None:
    """`value` as JSON (indented by 2 unless told otherwise), atomically."""
    dumps.setdefault("indent", 2)
    write_text(path, json.dumps(value, **dumps) + "\n")


def sweep(folder: str | os.PathLike, older_than: float = STALE_SECONDS) -> list[Path]:
    """Removes temporary files of writers that died (older than `older_than` seconds)."""
    folder, removed, now = Path(folder), [], time.time()
    if not folder.is_dir():
        return removed
    for temp in folder.glob(f".*{TEMP_SUFFIX}"):
        with contextlib.suppress(OSError):  # another sweeper got there first
            if now - temp.stat().st_mtime > older_than:
                temp.unlink()
                removed.append(temp)
    return removed


def _sync_folder(folder: Path) -> None:
    """Makes the rename itself durable (the folder's entry), where the OS allows it."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some filesystems refuse fsync on folders; the rename is still atomic
    finally:
        os.close(descriptor)
