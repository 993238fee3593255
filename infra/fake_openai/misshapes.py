"""Answers that arrive 200 but are not answers, for the ``[[output:NAME]]`` markers of :data:`SHAPE_MARKERS`.

``queued``, ``in_progress``, ``failed``: a Responses answer with that ``status`` and no output (what the API
gives for ``background: true``, or a response that failed; other endpoints have no status and answer as
usual); ``empty``: the endpoint's list (``choices``, ``output``, ``data``, ``results``) empty; ``bad_model``:
``model`` a list, not a string. (``deep``, an answer's text nested 5,000 deep, is made with the text:
:mod:`.endpoints`.)
"""

from __future__ import annotations

import json
from typing import Any, Final

__all__ = ["SHAPE_MARKERS", "misshape"]

SHAPE_MARKERS: Final = ("queued", "in_progress", "failed", "empty", "bad_model")
_STATUSES: Final = ("queued", "in_progress", "failed")
_LISTS: Final = ("choices", "output", "data", "results")
_FAILED: Final = {"code": "server_error", "message": "The model failed to generate a response."}


def misshape(raw: bytes, marker: str) -> bytes:
    """The rendered answer ``raw`` made into what ``marker`` names."""
    body: dict[str, Any] = json.loads(raw)
    if marker in _STATUSES:
        if body.get("object") != "response":
            return raw
        body.update(status=marker, output=[], completed_at=None, usage=None)
        body["error"] = _FAILED if marker == "failed" else None
    elif marker == "empty":
        for name in _LISTS:
            if isinstance(body.get(name), list):
                body[name] = []
    elif marker == "bad_model":
        body["model"] = [body.get("model")]
    return json.dumps(body, separators=(",", ":")).encode()
