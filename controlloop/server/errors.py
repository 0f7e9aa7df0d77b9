"""Error responses: every client error is ``{"error": ..., "problems": [...]}`` with a 4xx.

FastAPI's own validation errors (path/query parameters) and undecodable JSON are
turned into the same shape, so no bad input ever reaches a 500.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from controlloop.config import ConfigError, is_bound_problem

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A client error with an HTTP status, a one-line message and optional problem lines."""

    def __init__(self, status: int, error: str, problems: list[str] | None = None):
        super().__init__(error)
        self.status = status
        self.error = error
        self.problems = problems or []

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.error}
        if self.problems:
            out["problems"] = self.problems
        return out


def invalid(problems: list[str], error: str = "invalid request body") -> ApiError:
    status = 422 if any(is_bound_problem(p) for p in problems) else 400
    return ApiError(status, error, problems)


def not_found(what: str, name: str) -> ApiError:
    return ApiError(404, f"unknown {what} '{name}'")


def from_config_error(exc: ConfigError, error: str = "invalid request body") -> ApiError:
    """400; 422 when a value is beyond its physical bound (controlloop.bounds)."""
    status = 422 if any(is_bound_problem(p) for p in exc.problems) else 400
    return ApiError(status, error, list(exc.problems))


DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024


async def _body(request: Request) -> bytes:
    """The body, refused with 413 past the limit (announced or streamed) before it is read."""
    ctx = getattr(request.app.state, "ctx", None)
    limit = ctx.limits.max_body_bytes if ctx is not None else DEFAULT_MAX_BODY_BYTES
    announced = request.headers.get("content-length", "")
    if announced.isdigit() and int(announced) > limit:
        raise ApiError(
            413, f"request body of {int(announced)} bytes is over the {limit}-byte limit"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, *, required: bool = True) -> Any:
    """The request body as JSON; ``None`` when empty and not required."""
    raw = await _body(request)
    if not raw.strip():
        if required:
            raise ApiError(400, "request body is empty; expected a JSON document")
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"request body is not UTF-8: {exc.reason}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApiError(
            400, f"malformed JSON: line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None


def _loc(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    head, rest = (parts[0], parts[1:]) if parts else ("request", [])
    return f"{head}: {'.'.join(rest)}" if rest else head


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            got = err.get("input")
            shown = json.dumps(got) if isinstance(got, str | int | float | bool) else None
            problem = f"{_loc(err.get('loc', ()))}: {err.get('msg', 'invalid')}"
            problems.append(problem + (f", got {shown}" if shown is not None else ""))
        return JSONResponse(
            {"error": "invalid request parameters", "problems": problems}, status_code=400
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error = str(exc.detail)
        if exc.status_code == 404 and error == "Not Found":
            error = f"no endpoint {request.method} {request.url.path}; see /docs"
        elif exc.status_code == 405:
            error = f"method {request.method} not allowed on {request.url.path}"
        return JSONResponse(
            {"error": error}, status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not bad input: log the trace, tell the client nothing internal.
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)
