"""The bitmap a resumed shard keeps of the lines done: a set of line numbers in bounded memory."""

from __future__ import annotations

import sys

from promptdrop.adapters.request_log import LineSet


def test_it_holds_what_was_added_and_nothing_else() -> None:
    done = LineSet([3, 1, 1_000_000, 3])
    assert len(done) == 3
    assert [n for n in (0, 1, 2, 3, 4, 999_999, 1_000_000, 1_000_001, -1) if n in done] == [1, 3, 1_000_000]
    assert "3" not in done
    done.add(2)
    assert (2 in done, len(done)) == (True, 4)
    assert len(LineSet()) == 0
    assert 5 not in LineSet()


def test_a_million_lines_take_an_eighth_of_a_megabyte_not_sixty() -> None:
    done = LineSet(range(1, 1_000_001, 2))
    assert len(done) == 500_000
    assert all(n in done for n in (1, 3, 999_999))
    assert not any(n in done for n in (2, 4, 1_000_000))
    assert sys.getsizeof(done._bits) < 300_000  # grown by doubling: at most twice the 125 KB needed
