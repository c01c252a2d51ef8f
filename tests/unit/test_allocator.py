"""robaudit.allocator: freed memory kept for speed, but the heap's growth bounded."""

from __future__ import annotations

import pytest

from robaudit import allocator


class FakeLibc:
    def __init__(self) -> None:
        self.trimmed = 0

    def malloc_trim(self, pad: int) -> int:
        self.trimmed += 1
        return 1


def test_relieve_trims_only_once_the_heap_grew_well_past_the_last_trim(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    libc = FakeLibc()
    resident = [2 << 30]
    monkeypatch.setattr(allocator, "_WATCH", allocator._Watch())
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: True)
    monkeypatch.setattr(allocator, "_libc", lambda: libc)
    monkeypatch.setattr(allocator, "resident_bytes", lambda: resident[0])
    gib = 1 << 30

    def calls(k: int) -> list[bool]:
        return [allocator.relieve() for _ in range(k * allocator.CHECK_EVERY)]

    calls(1)  # the first look sets the bar: 2 GiB + max(1 GiB, 100%) = 4 GiB
    resident[0] = 4 * gib - 1
    assert not any(calls(10)) and libc.trimmed == 0
    resident[0] = 4 * gib + 1
    assert sum(calls(1)) == 1 and libc.trimmed == 1 and allocator.trims() == 1
    # right after a trim the working set faults back in: the bar never drops below 4 GiB + ...
    resident[0] = 3 * gib
    assert not any(calls(10))
    resident[0] = 9 * gib  # growth again: trimmed
    assert any(calls(1)) and libc.trimmed == 2


def test_relieve_is_a_no_op_where_malloc_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "_WATCH", allocator._Watch())
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: False)
    assert not any(allocator.relieve() for _ in range(100))
