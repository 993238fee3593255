"""Planning a split file: the lines that repeat a custom_id are found from 8-byte hashes."""

from __future__ import annotations

from array import array

from promptdrop.jobs.planning import _repeated


def test_repeated_hashes_are_found_in_every_part_and_blank_lines_are_not() -> None:
    # Given hashes over the whole 64-bit range, a few twice or three times, and blank lines (0)
    top = 1 << 63
    hashes = array("Q", [0, 5, top + 7, 9, 0, 5, (1 << 64) - 1, top + 7, 11, (1 << 64) - 1, top + 7, 0])

    # When the repeated ones are asked for
    twice = _repeated(hashes)

    # Then each repeated hash is there once, from the lowest part to the highest, and no blank line
    assert twice == {5, top + 7, (1 << 64) - 1}
