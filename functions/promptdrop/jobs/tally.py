"""What one run did, model by model and failure code by failure code: the handler's per-model metrics.

Kept beside the run's other figures (:class:`.progress.Progress` holds one; the recorder adds to it),
one dict update per outcome. A request is counted under the model it asked for — what an operator
chose and filters by — not the snapshot an answer names (``gpt-4o-mini`` is answered as
``gpt-4o-mini-2024-07-18``): its 429s and failures know only the first. Its cost is priced at what
the answer names (its model and service tier), as the job's own estimate is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..prices import PriceKey, Tokens, add_tokens, estimate_cost_usd, price_key
from ..records import RequestRecord

__all__ = ["ModelFigures", "RunTally"]


@dataclass(slots=True)
class ModelFigures:
    """One model's share of a run: requests answered and failed, their tokens and what they cost."""

    answered: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Tokens by what they are priced at: the answers' model and tier.
    priced: dict[PriceKey, Tokens] = field(default_factory=dict)

    def cost_usd(self) -> float | None:
        """What this model's tokens cost; None when a model answered has no known price."""
        return estimate_cost_usd(self.priced) if self.priced else 0.0

    def paid(self, record: RequestRecord) -> None:
        """The tokens a request's item records, priced at the model and tier its answer names."""
        prompt, completion = record.prompt_tokens, record.completion_tokens
        if not prompt and not completion:
            return
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        key = price_key(record.model or "", record.service_tier)
        add_tokens(self.priced, key, prompt, completion, record.cached_tokens, record.cache_write_tokens)


@dataclass(slots=True)
class RunTally:
    """A run's outcomes by the model asked for, and its failures by error code."""

    models: dict[str, ModelFigures] = field(default_factory=dict)
    failure_codes: dict[str, int] = field(default_factory=dict)

    def answered(self, model: str, record: RequestRecord) -> None:
        """A request for ``model`` answered (from the cache too): ``record``, its item, says what it used."""
        figures = self._of(model)
        figures.answered += 1
        figures.paid(record)

    def failed(self, model: str | None, code: str, record: RequestRecord | None = None) -> None:
        """A request failed with ``code``; ``model`` None: a line that is no request (it names none).
        ``record``: its item, when it paid for unusable answers."""
        self.failure_codes[code] = self.failure_codes.get(code, 0) + 1
        if model is None:
            return
        figures = self._of(model)
        figures.failed += 1
        if record is not None:
            figures.paid(record)

    def _of(self, model: str) -> ModelFigures:
        figures = self.models.get(model)
        if figures is None:
            figures = self.models[model] = ModelFigures()
        return figures
