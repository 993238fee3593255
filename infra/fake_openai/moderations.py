"""The fake's ``/v1/moderations``: low, deterministic scores from a hash of the input (a marker flags it)."""

from __future__ import annotations

import hashlib
import random
from typing import Any, Final

from openai.types.moderation import Categories

from infra.fake_openai.endpoints import Answer, Ask, _dumps, _hex_id, _tokens
from infra.fake_openai.validation import MODERATIONS_SPEC, ApiError, check_body, invalid, invalid_value

__all__ = ["MODERATION_CATEGORIES", "Moderations"]

#: The categories as the API names them (``harassment/threatening``), read from the SDK's model.
MODERATION_CATEGORIES: Final = tuple(f.alias or name for name, f in Categories.model_fields.items())
#: The categories the omni models also judge images for.
_IMAGE_CATEGORIES: Final = frozenset(
    {"violence", "violence/graphic", "self-harm", "self-harm/intent", "self-harm/instructions", "sexual"}
)
_DEFAULT_MODERATION_MODEL: Final = "omni-moderation-latest"


class Moderations:
    path = "/moderations"

    def parse(self, body: object) -> Ask | ApiError:
        error = check_body(MODERATIONS_SPEC, body)
        if error is not None:
            return error
        assert isinstance(body, dict)
        given = body["input"]
        inputs: list[tuple[str, bool]] = []  # (text, has an image)
        if isinstance(given, str):
            inputs = [(given, False)]
        elif isinstance(given, list) and given and all(isinstance(i, str) for i in given):
            inputs = [(i, False) for i in given]
        elif isinstance(given, list) and given and all(isinstance(i, dict) for i in given):
            parts = []
            for i, item in enumerate(given):
                kind = item.get("type")
                if kind not in ("text", "image_url"):
                    return invalid_value(f"input[{i}].type", str(kind), ("text", "image_url"))
                if kind == "text":
                    parts.append(str(item.get("text", "")))
            inputs = [("\n".join(parts), any(item.get("type") == "image_url" for item in given))]
        else:
            return invalid(
                "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."
            )
        return Ask(
            model=body.get("model") or _DEFAULT_MODERATION_MODEL,
            text="\n".join(text for text, _ in inputs),
            input_tokens=sum(_tokens(text) for text, _ in inputs),
            max_output_tokens=None,
            outputs=0,
            body=body,
            inputs=inputs,
        )

    def render(self, ask: Ask, rng: random.Random, misbehave: str = "") -> Answer:
        flagged = misbehave == "content_filter"  # the marker makes moderation flag it
        results = [_moderation(text, has_image, flagged=flagged) for text, has_image in ask.inputs]
        body = {"id": _hex_id(rng, "modr-", 32), "model": ask.model, "results": results}
        return Answer(_dumps(body), ask.input_tokens, 0)


def _moderation(text: str, has_image: bool, *, flagged: bool) -> dict[str, Any]:
    """One result: low, deterministic scores from a hash of the text; ``flagged`` puts violence at 0.98."""
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
    scores = {c: round(digest[i] / 255 * 1e-3, 8) for i, c in enumerate(MODERATION_CATEGORIES)}
    if flagged:
        scores["violence"] = 0.98
    kinds = ["text", "image"] if has_image else ["text"]
    return {
        "flagged": flagged,
        "categories": {c: scores[c] >= 0.5 for c in MODERATION_CATEGORIES},
        "category_scores": scores,
        "category_applied_input_types": {
            c: kinds if c in _IMAGE_CATEGORIES else ["text"] for c in MODERATION_CATEGORIES
        },
    }
