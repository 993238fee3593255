"""The fake's ``/v1/embeddings``: a deterministic unit vector per input (a hash of it), as floats or base64."""

from __future__ import annotations

import base64
import hashlib
import math
import random
import sys
from array import array
from typing import Final

from infra.fake_openai.endpoints import Answer, Ask, _dumps, _input_text, _input_tokens, _inputs
from infra.fake_openai.validation import EMBEDDINGS_SPEC, ApiError, check_body, invalid

__all__ = ["Embeddings", "embedding_vector"]

#: Native dimensions; a model not listed has 1536 and accepts ``dimensions`` (as the text-embedding-3 models do).
_EMBEDDING_DIMENSIONS: Final = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
_FIXED_DIMENSIONS: Final = frozenset({"text-embedding-ada-002"})
_DEFAULT_DIMENSIONS: Final = 1536
_MAX_EMBEDDING_INPUTS: Final = 2048


def embedding_vector(item: str | list[int], dimensions: int) -> list[float]:
    """A deterministic unit vector of an input: a hash of it stretched to ``dimensions`` values."""
    data = item.encode("utf-8", "surrogatepass") if isinstance(item, str) else b"\0" + bytes(str(item), "ascii")
    ints = array("h")
    ints.frombytes(hashlib.shake_256(data).digest(2 * dimensions))
    if sys.byteorder == "big":  # the same vector on every machine
        ints.byteswap()
    norm = math.sqrt(sum(x * x for x in ints)) or 1.0
    return [round(x / norm, 8) for x in ints]


class Embeddings:
    path = "/embeddings"

    def parse(self, body: object) -> Ask | ApiError:
        error = check_body(EMBEDDINGS_SPEC, body)
        if error is not None:
            return error
        assert isinstance(body, dict)
        inputs = _inputs(body["input"], "input", allow_empty_string=False)
        if isinstance(inputs, ApiError):
            return inputs
        if len(inputs) > _MAX_EMBEDDING_INPUTS:
            return invalid(
                f"Invalid 'input': array too long. Expected an array with maximum length {_MAX_EMBEDDING_INPUTS}, "
                f"but got an array with length {len(inputs)} instead.",
                "input",
                "array_above_max_length",
            )
        model: str = body["model"]
        native = _EMBEDDING_DIMENSIONS.get(model, _DEFAULT_DIMENSIONS)
        dimensions = body.get("dimensions")
        if dimensions is not None:
            if model in _FIXED_DIMENSIONS:
                return invalid("This model does not support specifying dimensions.", "dimensions")
            if dimensions > native:
                return invalid(
                    f"Invalid 'dimensions': integer above maximum value. Expected a value <= {native}, "
                    f"but got {dimensions} instead.",
                    "dimensions",
                    "integer_above_max_value",
                )
        return Ask(
            model=model,
            text="\n".join(_input_text(i) for i in inputs),
            input_tokens=sum(_input_tokens(i) for i in inputs),
            max_output_tokens=None,
            outputs=0,
            body=body,
            inputs=inputs,
        )

    def render(self, ask: Ask, rng: random.Random, misbehave: str = "") -> Answer:
        dimensions = ask.body.get("dimensions") or _EMBEDDING_DIMENSIONS.get(ask.model, _DEFAULT_DIMENSIONS)
        as_base64 = ask.body.get("encoding_format") == "base64"
        data = []
        for index, item in enumerate(ask.inputs):
            vector = embedding_vector(item, dimensions)
            embedding: list[float] | str = vector
            if as_base64:
                floats = array("f", vector)
                if sys.byteorder == "big":
                    floats.byteswap()
                embedding = base64.b64encode(floats.tobytes()).decode("ascii")
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        usage = {"prompt_tokens": ask.input_tokens, "total_tokens": ask.input_tokens}
        body = {"object": "list", "data": data, "model": ask.model, "usage": usage}
        return Answer(_dumps(body), ask.input_tokens, 0)
