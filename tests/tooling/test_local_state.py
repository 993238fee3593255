"""``promptdrop local``'s kept state (infra/local_state.py) when it cannot be used: set aside and said,
never a crash at start. Its round trip through a real restart: tests/integration/test_cli_local.py."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import moto
import pytest

from infra.cfn_template import DEFAULT_TEMPLATE
from infra.local_state import STATE_FILE, StaleState, load


def _header(**changes: str) -> bytes:
    template = hashlib.sha256(DEFAULT_TEMPLATE.read_bytes()).hexdigest()
    return pickle.dumps({"moto": moto.__version__, "template": template, "stack": {}} | changes)


def test_nothing_kept_is_nothing_loaded(tmp_path: Path) -> None:
    assert load(tmp_path, "http://127.0.0.1:1") is None


@pytest.mark.parametrize(
    ("state", "why"),
    [
        (_header() + b"\x80\x05\x95 cut short", "it cannot be read: "),  # a save killed half-way, say
        (b"{not a pickle", "it cannot be read: "),
        (_header(template="0" * 64), f"{DEFAULT_TEMPLATE.name} changed since it was saved"),
        (_header(moto="0.0.1"), f"it was made by moto 0.0.1 and this is moto {moto.__version__}"),
    ],
)
def test_a_state_that_cannot_be_used_is_set_aside_and_said(tmp_path: Path, state: bytes, why: str) -> None:
    (tmp_path / STATE_FILE).write_bytes(state)
    with pytest.raises(StaleState) as stale:
        load(tmp_path, "http://127.0.0.1:1")  # no server: nothing of it reaches moto
    assert f"the saved state in {tmp_path} was not loaded ({why}" in str(stale.value)
    (aside,) = tmp_path.glob(f"{STATE_FILE}.set-aside-*")
    assert str(aside) in str(stale.value)
    assert aside.read_bytes() == state  # kept as it was, for whoever wants it
    assert load(tmp_path, "http://127.0.0.1:1") is None  # the next start begins afresh
