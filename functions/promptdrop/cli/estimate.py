"""``promptdrop estimate FILE``: what a file would cost, before paying — offline, no AWS, no API call.

The file is parsed by the function's own parser (:func:`promptdrop.formats.parse_stream`, by
suffix), so the lines reported as failing are the ones the function would fail, with its reasons
(a repeated ``custom_id`` included). Tokens are estimated, not counted: ~4 characters a token of
prompt, input or message text plus 4 a message (no tokenizer download; each endpoint's
:meth:`~promptdrop.engine.endpoints.EndpointSpec.input_estimate`). Output is the worst case,
by endpoint, as the cost guard counts it (each endpoint's output bound: README, "Endpoints"); a
request that sets no limit is counted at ``--assume-output-tokens`` and said so. Prices:
:mod:`promptdrop.prices` (genai-prices, offline).

The worst case is priced in each mode a file can be sent in: ``realtime`` (every request at the
standard tier), ``flex`` (the requests that go flex — as the function decides it — at the flex
rates, the others at the standard ones; a request flex keeps refusing falls back to the standard
tier, priced as realtime), ``batch`` (every request at the Batch API's rates) and ``auto`` (batch
while its deadline allows, then flex, then standard: between the batch and the realtime figures,
shown as that range).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine.endpoints import DEFAULT_OUTPUT_ESTIMATE, spec_of
from ..engine.request import Endpoint
from ..formats import SUFFIXES, FileRejected, LineError, parse_stream
from ..jobs.modes import Mode, sent_as
from ..outputs import estimate_cost_usd
from ..prices import BATCH, FLEX, PriceKey, price_key
from ..records import FailureCode
from .errors import CliError, ExitCode
from .figures import money, number
from .view import Column, View

__all__ = ["Estimate", "add_parser", "estimate_file", "run"]

DEFAULT_MODEL = "gpt-4o-mini"  # the function's default (PROMPTDROP_MODEL)
DEFAULT_ASSUMED_OUTPUT = DEFAULT_OUTPUT_ESTIMATE  # what the function assumes of a request with no output limit
_CHUNK = 256 * 1024
# The modes whose worst case is a single figure, and the tier each prices a request at (see the docstring).
_REALTIME, _FLEX, _BATCH, _AUTO = Mode.REALTIME.value, Mode.FLEX.value, BATCH, "auto"


@dataclass(frozen=True)
class Failing:
    line: int
    custom_id: str
    reason: str


@dataclass
class ModelFigures:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0  # worst case (assumed for requests without a limit)


@dataclass
class Estimate:
    file: str
    default_model: str
    assumed_output_tokens: int
    requests: int = 0
    failing: list[Failing] = field(default_factory=list)
    without_output_limit: int = 0
    by_model: dict[str, ModelFigures] = field(default_factory=dict)
    rejected: tuple[str, str] | None = None  # (code, message) when the whole file would fail
    flex_requests: int = 0  # the requests flex mode would send at the flex tier
    # (input, worst-case output) tokens by what they are priced by, in each mode: realtime, flex, batch
    by_mode: dict[str, dict[PriceKey, list[int]]] = field(default_factory=dict)

    def add(self, model: str, goes_flex: bool, tokens: tuple[int, int]) -> None:
        """One request's tokens, priced in each mode at the tier that mode sends it at."""
        self.flex_requests += goes_flex
        keys = {_REALTIME: model, _FLEX: price_key(model, FLEX if goes_flex else None), _BATCH: (model, BATCH)}
        for mode, key in keys.items():
            sums = self.by_mode.setdefault(mode, {}).setdefault(key, [0, 0])
            sums[0] += tokens[0]
            sums[1] += tokens[1]

    def cost_by_mode(self) -> dict[str, Any]:
        """The worst case in each mode (None: a model has no price); ``auto`` as ``{"low", "high"}``."""
        costs: dict[str, Any] = {
            mode: estimate_cost_usd({key: (p, c) for key, (p, c) in self.by_mode.get(mode, {}).items()})
            for mode in (_REALTIME, _FLEX, _BATCH)
        }
        low, high = costs[_BATCH], costs[_REALTIME]
        costs[_AUTO] = None if low is None or high is None else {"low": low, "high": high}
        return costs

    @property
    def input_tokens(self) -> int:
        return sum(m.input_tokens for m in self.by_model.values())

    @property
    def output_tokens(self) -> int:
        return sum(m.output_tokens for m in self.by_model.values())

    @property
    def unknown_models(self) -> list[str]:
        return sorted(m for m in self.by_model if estimate_cost_usd({m: (1, 1)}) is None)

    @property
    def cost_usd(self) -> float | None:
        """Input at its estimate plus the worst-case output, priced; None if any model has no price."""
        return estimate_cost_usd({m: (f.input_tokens, f.output_tokens) for m, f in self.by_model.items()})

    def cost_parts_usd(self) -> tuple[float, float] | None:
        """(input, worst-case output) priced apart; None if any model has no price."""
        input_cost = estimate_cost_usd({m: (f.input_tokens, 0) for m, f in self.by_model.items()})
        output_cost = estimate_cost_usd({m: (0, f.output_tokens) for m, f in self.by_model.items()})
        return None if input_cost is None or output_cost is None else (input_cost, output_cost)

    def as_json(self, show: int | None = None) -> dict[str, Any]:
        return {
            "file": self.file,
            "rejected": None if self.rejected is None else {"code": self.rejected[0], "message": self.rejected[1]},
            "lines": self.requests + len(self.failing),
            "requests": self.requests,
            "failing": len(self.failing),
            "failing_lines": [vars(f) for f in self.failing[:show]],
            "input_tokens_estimate": self.input_tokens,
            "output_tokens_worst_case": self.output_tokens,
            "requests_without_output_limit": self.without_output_limit,
            "assumed_output_tokens": self.assumed_output_tokens,
            "by_model": {m: vars(f) for m, f in sorted(self.by_model.items())},
            "unknown_models": self.unknown_models,
            "cost_usd_worst_case": self.cost_usd,
            "requests_flex": self.flex_requests,
            "cost_usd_worst_case_by_mode": self.cost_by_mode(),
        }


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            yield chunk


async def _estimate(
    path: Path, *, model: str, template: str | None, assume_output: int, endpoint: str = Endpoint.CHAT.value
) -> Estimate:
    result = Estimate(file=str(path), default_model=model, assumed_output_tokens=assume_output)
    first_line: dict[str, int] = {}  # custom_id -> its first line: a repeat fails, as in the function
    parsed = parse_stream(
        path.suffix, _chunks(path), key=path.name, default_model=model, template=template, endpoint=endpoint
    )
    try:
        async for item in parsed:
            earlier = first_line.setdefault(item.custom_id, item.line)
            if earlier != item.line:
                reason = f"custom_id {item.custom_id!r} is already used by line {earlier}"
                result.failing.append(Failing(item.line, item.custom_id, reason))
            elif isinstance(item, LineError):
                result.failing.append(Failing(item.line, item.custom_id, item.message))
            else:
                body = json.loads(item.body)
                figures = result.by_model.setdefault(str(body.get("model") or model), ModelFigures())
                spec = spec_of(item.endpoint)
                limit = spec.output_bound(body)
                if limit is None:
                    result.without_output_limit += 1
                tokens = (spec.input_estimate(body), assume_output if limit is None else limit)
                figures.requests += 1
                figures.input_tokens += tokens[0]
                figures.output_tokens += tokens[1]
                result.requests += 1
                result.add(str(body.get("model") or model), sent_as(item, Mode.FLEX).flex, tokens)
    except FileRejected as exc:
        result.rejected = (exc.code, exc.message)
    finally:
        await parsed.aclose()
    return result


def estimate_file(
    path: Path,
    *,
    model: str = DEFAULT_MODEL,
    template: str | None = None,
    assume_output: int = DEFAULT_ASSUMED_OUTPUT,
    endpoint: str = Endpoint.CHAT.value,
) -> Estimate:
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    if Endpoint.of(endpoint) is None:
        raise CliError(f"--endpoint {endpoint}: not one of {', '.join(e.value for e in Endpoint)}")
    return asyncio.run(_estimate(path, model=model, template=template, assume_output=assume_output, endpoint=endpoint))


def add_parser(commands: Any, parent: argparse.ArgumentParser) -> None:
    cmd = commands.add_parser(
        "estimate",
        parents=[parent],
        help="lines, failing lines, tokens and worst-case cost of a file (offline)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    cmd.add_argument("file", type=Path, help=f"a prompt file ({', '.join(SUFFIXES)})")
    cmd.add_argument("--model", help="for requests naming none (default: $PROMPTDROP_MODEL or gpt-4o-mini)")
    cmd.add_argument("--template", help="a .csv's prompt template, as submit --template would send it")
    cmd.add_argument(
        "--endpoint",
        help="for short-form lines naming none, as the upload's promptdrop-endpoint would "
        "(default: $PROMPTDROP_ENDPOINT or /v1/chat/completions)",
    )
    cmd.add_argument(
        "--assume-output-tokens",
        type=int,
        default=DEFAULT_ASSUMED_OUTPUT,
        metavar="N",
        help=f"output tokens counted for a request with no max_tokens (default {DEFAULT_ASSUMED_OUTPUT})",
    )
    cmd.add_argument("--show", type=int, default=10, metavar="N", help="failing lines to list (default 10)")


def run(args: argparse.Namespace, view: View) -> int:
    model = args.model or os.environ.get("PROMPTDROP_MODEL") or DEFAULT_MODEL
    endpoint = args.endpoint or os.environ.get("PROMPTDROP_ENDPOINT") or Endpoint.CHAT.value
    found = estimate_file(
        args.file,
        model=model,
        template=args.template,
        assume_output=args.assume_output_tokens,
        endpoint=endpoint if endpoint.startswith("/v1/") else "/v1" + endpoint,
    )
    code = ExitCode.NOT_ALL_SUCCEEDED if found.rejected or found.failing else ExitCode.OK
    if view.json_mode:
        view.json(found.as_json(args.show))
        return code
    if found.rejected is not None:
        view.line(f"{found.file}: the whole file would fail ({found.rejected[0]}): {found.rejected[1]}")
        if found.rejected[0] == FailureCode.INVALID_CSV and args.template is None:
            # here the template is a flag, not the upload's metadata the function's message names
            view.line("(a .csv without a prompt column: give its template with --template, as submit --template)")
        return code
    cost, parts = found.cost_usd, found.cost_parts_usd()
    if cost is None or parts is None:
        price = f"unknown: no price for {', '.join(found.unknown_models)}"
    else:
        price = f"{money(cost)} at most (input ~{money(parts[0])} + output at most {money(parts[1])})"
    by_mode = found.cost_by_mode() if cost is not None else {}
    assumed = (
        f" ({found.without_output_limit:,} request(s) set no max_tokens: counted at {found.assumed_output_tokens:,} "
        "each, --assume-output-tokens)"
        if found.without_output_limit
        else ""
    )
    view.fields(
        [
            ("lines", f"{found.requests + len(found.failing):,} (blank ones skipped)"),
            ("requests", number(found.requests)),
            ("would fail", number(len(found.failing))),
            ("input tokens", f"~{found.input_tokens:,} (estimate: ~4 characters a token)"),
            ("output tokens", f"{found.output_tokens:,} at most{assumed}"),
            ("cost realtime", price),
            *_mode_rows(found, by_mode),
        ],
        title=f"{found.file} (default model {found.default_model})",
    )
    if len(found.by_model) > 1:
        rows = [
            [m, number(f.requests), number(f.input_tokens), number(f.output_tokens)]
            for m, f in sorted(found.by_model.items())
        ]
        view.table([Column("model"), Column("requests", True), Column("input", True), Column("output", True)], rows)
    if found.failing:
        shown = found.failing[: args.show]
        rows = [[str(f.line), f.custom_id, f.reason] for f in shown]
        more = len(found.failing) - len(shown)
        title = f"lines that would fail ({len(shown)} shown{f', {more} more' if more else ''})"
        view.table([Column("line", True), Column("custom_id"), Column("reason")], rows, title=title)
    return code


def _mode_rows(found: Estimate, costs: dict[str, Any]) -> list[tuple[str, str]]:
    """The worst case in the other modes (none when a model has no price: the realtime row says so)."""
    if not costs:
        return []
    if found.flex_requests:
        flex = f"{found.flex_requests:,} of {found.requests:,} request(s) go flex; a fallback is priced as realtime"
    else:
        flex = "no request goes flex: none is a chat or Responses line to a model that offers it"
    auto = costs[_AUTO]
    return [
        ("cost flex", f"{money(costs[_FLEX])} at most ({flex})"),
        ("cost batch", f"{money(costs[_BATCH])} at most (every request at the Batch API's rates)"),
        (
            "cost auto",
            f"{money(auto['low'])} to {money(auto['high'])} at most (batch while the deadline allows, "
            "then flex, then standard)",
        ),
    ]
