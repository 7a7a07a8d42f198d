"""Random (version 4) UUIDs for run and step ids, without a system call each.

`uuid.uuid4()` reads 16 bytes from `os.urandom`, which releases the GIL around its system call; on
the /v1 event loop that hands the GIL to the batched writer's thread, and the loop then waits up to a
switch interval to get it back. Measured (bench/v1_cpu.py): ~68 µs per call under load instead of
~3. Here the same kernel randomness is read 4 KiB at a time, per thread, and cut into ids.
"""
from __future__ import annotations

import os
import threading
import uuid

IDS_PER_READ = 256
_local = threading.local()


def _forget_after_fork() -> None:
    global _local
    _local = threading.local()  # a forked child (a Celery worker) must not replay its parent's bytes


os.register_at_fork(after_in_child=_forget_after_fork)


def new_uuid() -> uuid.UUID:
    state = _local.__dict__
    buffer, offset = state.get("buffer", b""), state.get("offset", 0)
    if offset >= len(buffer):
        buffer, offset = os.urandom(16 * IDS_PER_READ), 0
        state["buffer"] = buffer
    state["offset"] = offset + 16
    return uuid.UUID(bytes=buffer[offset:offset + 16], version=4)


def new_id() -> str:
    """A new random UUID as text (`str(uuid.uuid4())`)."""
    return str(new_uuid())
