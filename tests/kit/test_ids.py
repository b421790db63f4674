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
