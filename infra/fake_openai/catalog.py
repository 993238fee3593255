"""Every endpoint the fake serves, in one tuple: what the server routes and the Batch API answers."""

from __future__ import annotations

from typing import Final

from infra.fake_openai.embeddings import Embeddings
from infra.fake_openai.endpoints import CHAT, Completions, Endpoint, Responses
from infra.fake_openai.moderations import Moderations

__all__ = ["ENDPOINTS"]

ENDPOINTS: Final[tuple[Endpoint, ...]] = (CHAT, Responses(), Embeddings(), Completions(), Moderations())
