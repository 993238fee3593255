"""How a file's requests are sent: its mode, from the upload's metadata or the environment.

``realtime`` sends every request at the standard tier, as promptdrop always has. ``flex`` sends the
requests that can go flex — Chat Completions and Responses lines to a model that offers the flex
tier (one genai-prices prices apart) — with ``service_tier: "flex"``: the same answers at about
half the price, slower, and a request flex keeps refusing falls back (engine/flex.py). A line that
names a ``service_tier`` of its own keeps it, in either mode.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from ..engine.flex import as_flex
from ..engine.request import Request
from ..formats import FileRejected
from ..prices import has_flex
from ..records import FailureCode
from ..settings import Settings

__all__ = ["MODE_METADATA", "Mode", "mode_of", "sent_as"]

MODE_METADATA = "promptdrop-mode"


class Mode(StrEnum):
    REALTIME = "realtime"
    FLEX = "flex"


def mode_of(settings: Settings, metadata: Mapping[str, str]) -> Mode:
    """The file's mode: the upload's ``promptdrop-mode``, else ``PROMPTDROP_MODE``."""
    value = metadata.get(MODE_METADATA)
    if value is None:
        return Mode(settings.mode)
    try:
        return Mode(value.strip().lower())
    except ValueError:
        modes = ", ".join(mode.value for mode in Mode)
        shown = value[:40]
        raise FileRejected(
            FailureCode.INVALID_MODE, f"{MODE_METADATA}={shown!r} is not a mode: use one of {modes}"
        ) from None


def sent_as(request: Request, mode: Mode) -> Request:
    """The request as the file's mode sends it."""
    if mode is Mode.FLEX and has_flex(request.model_name()):
        return as_flex(request)
    return request
