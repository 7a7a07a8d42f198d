"""Run and step ids: random version-4 UUIDs, never repeated, also across a fork (Celery's prefork workers)."""
import os
import uuid

from orchestration.ids import IDS_PER_READ, new_id


def test_ids_are_distinct_version_4_uuids_across_buffer_refills():
    ids = [new_id() for _ in range(IDS_PER_READ * 3 + 5)]
    assert len(set(ids)) == len(ids)
    parsed = [uuid.UUID(value) for value in ids]
    assert all(u.version == 4 and u.variant == uuid.RFC_4122 and str(u) == value for u, value in zip(parsed, ids))


def test_a_forked_child_does_not_repeat_its_parents_next_ids():
    new_id()  # the parent has a buffer with ids left in it
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its first ids and leave at once
        os.close(read_end)
        os.write(write_end, ",".join(new_id() for _ in range(3)).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        child_ids = pipe.read().split(",")
    os.waitpid(pid, 0)
    parent_ids = [new_id() for _ in range(3)]
    assert len(child_ids) == 3 and not set(child_ids) & set(parent_ids)
