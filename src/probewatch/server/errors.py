"""Errors the HTTP layer answers with: one body (`schemas.ErrorBody`), a 4xx for anything the
client sent, 503 when the server cannot serve (loading, event log unwritable), and messages that
name no server-side path."""

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from probewatch.errors import ProbewatchError
from probewatch.server.schemas import ErrorBody

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def error_body(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind}}


def error_response(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse(error_body(message, kind), status_code=status)


def sse_error(message: str, kind: str = "server_error") -> str:
    """The chunk that ends a stream which failed after it started."""
    return f"data: {json.dumps(error_body(message, kind))}\n\n"


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers a route gives (FastAPI `responses=`)."""
    return {status: {"model": ErrorBody, "description": _MEANING[status]} for status in statuses}


_MEANING = {
    400: "invalid request (the message says which field and why)",
    401: "missing or wrong API key",
    403: "Host or Origin not allowed (a web page of another site, or DNS rebinding)",
    404: "no such model, probe or route",
    409: "a probe of that name exists",
    413: "request body over the server's limit",
    415: "wrong content type",
    503: "not ready: the model is loading or failed to load, or the event log cannot be written",
}


def _methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, APIRoute) and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods or set()
    return sorted(methods)


class Redactor:
    """Replaces the server's own directories in messages with their names."""

    def __init__(self, roots: Iterable[Path | None]) -> None:
        forms = set()
        for root in roots:
            if root is not None:
                forms |= {str(root), str(root.expanduser().resolve())}
        self._forms = sorted((f for f in forms if len(f) > 1), key=len, reverse=True)

    def __call__(self, message: str) -> str:
        for form in self._forms:
            message = message.replace(form, f"<{Path(form).name}>")
        return message


def install_handlers(app: FastAPI, redact: Redactor) -> None:
    """Map every exception to the documented error body; nothing a client sends is a 5xx."""

    async def invalid(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        first = errors[0] if errors else {"msg": "invalid request", "loc": ()}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        reason = str(first["msg"])
        if first.get("type") == "extra_forbidden":
            reason = "unknown field; this route's fields are listed in GET /openapi.json"
        message = f"{where}: {reason}" if where else reason
        return error_response(400, message)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        kind = "not_found" if exc.status_code == 404 else "invalid_request_error"
        response = error_response(exc.status_code, str(exc.detail), kind)
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:  # every method of the path, not only the first route's
            response.headers["allow"] = ", ".join(_methods(request))
        return response

    async def api_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, redact(exc.message), exc.kind)

    async def user_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProbewatchError)
        return error_response(400, redact(str(exc)))

    async def undecodable(_request: Request, exc: Exception) -> JSONResponse:
        # Invalid UTF-8 or JSON nested beyond the parser's depth: the client's input.
        return error_response(400, f"the request body cannot be parsed ({type(exc).__name__})")

    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(ProbewatchError, user_error)
    app.add_exception_handler(UnicodeDecodeError, undecodable)
    app.add_exception_handler(RecursionError, undecodable)
