from __future__ import annotations

import re
import time

from ipaas.kit.ids import new_id


def test_format_and_uniqueness() -> None:
    ids = [new_id("ex") for _ in range(50_000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"ex_[0-9a-z]{25}", i) for i in ids)


def test_ids_sort_by_creation_millisecond() -> None:
    first = new_id("wf")
    time.sleep(0.002)  # ids are ordered by their millisecond, so cross one
    second = new_id("wf")
    assert first[3:12] < second[3:12]


def test_unique_across_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as pool:
        batches = list(pool.map(lambda _: [new_id("ex") for _ in range(5_000)], range(8)))
    ids = [i for batch in batches for i in batch]
    assert len(set(ids)) == len(ids)


def test_a_forked_child_does_not_repeat_its_parents_random_bytes() -> None:
    import os

    new_id("ex")  # the pool now holds unused bytes
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, through the pipe
        os.close(read)
        os.write(write, " ".join(new_id("ex")[12:] for _ in range(20)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    parent = {new_id("ex")[12:] for _ in range(20)}
    assert len(child) == 20
    assert not child & parent
