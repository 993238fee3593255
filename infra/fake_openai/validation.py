"""What a request body must be before the fake answers it, and the 400s the real API sends when it is not."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ApiError", "invalid", "missing"]


@dataclass(frozen=True, slots=True)
class ApiError:
    """An error answer: ``{"error": {"message", "type", "param", "code"}}`` with ``status``."""

    message: str
    param: str | None = None
    code: str | None = None
    status: int = 400
    type: str = "invalid_request_error"


def invalid(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(message, param, code)


def missing(param: str) -> ApiError:
    return ApiError(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")
