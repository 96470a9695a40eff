"""What stands between the network and the routes, as plain ASGI middleware.

- `BodyLimit`: bodies over the limit get 413, whether or not they declare their size.
- `Guard`: a Host allow-list (a DNS-rebinding page reaches 127.0.0.1 under its own name, so its
  Host header gives it away), an Origin check on `/v1` (a page of another site may not read the
  event log or plant a probe, even on loopback and without a key), the API key (constant-time
  compare), and security headers on every answer (the dashboard's CSP allows only our scripts).
"""

import hmac
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from probewatch.server.errors import ApiError, error_response

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        b"img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        b"form-action 'none'",
    ),
]


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, whether or not they say their size."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._reject(scope, receive, send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise ApiError(413, self._message())
            return message

        try:
            await self.app(scope, counting_receive, send)
        except ApiError as exc:
            await self._reject(scope, receive, send, exc.message)

    def _message(self) -> str:
        return f"request body is larger than the server's limit of {self.limit} bytes"

    async def _reject(
        self, scope: Scope, receive: Receive, send: Send, message: str | None = None
    ) -> None:
        response = error_response(413, message or self._message(), "request_too_large")
        await response(scope, receive, send)


class Guard:
    """Host allow-list, Origin check and API key; security headers on every response.

    `hosts` None allows any Host (a server bound beyond loopback, where the key protects it).
    """

    def __init__(
        self,
        app: ASGIApp,
        hosts: Iterable[str] | None,
        origins: Iterable[str] = (),
        api_key: str | None = None,
    ) -> None:
        self.app = app
        self.hosts = None if hosts is None else {h.lower().strip("[]") for h in hosts}
        self.origins = {o.rstrip("/").lower() for o in origins}
        self.key = api_key.encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers") or []}
        refusal = self._refusal(scope["path"], headers)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        if refusal is not None:
            status, text, kind = refusal
            await error_response(status, text, kind)(scope, receive, with_headers)
            return
        await self.app(scope, receive, with_headers)

    def _refusal(self, path: str, headers: dict[bytes, bytes]) -> tuple[int, str, str] | None:
        host = headers.get(b"host", b"").decode("latin-1")
        if self.hosts is not None and _hostname(host) not in self.hosts:
            return 403, "this server does not answer to that Host name", "forbidden"
        if not path.startswith("/v1"):
            return None
        origin = headers.get(b"origin")
        if origin is not None and not self._same_site(origin.decode("latin-1"), host):
            return 403, "requests from another site's page are refused", "forbidden"
        if origin is None and headers.get(b"sec-fetch-site") == b"cross-site":
            return 403, "requests from another site's page are refused", "forbidden"
        if self.key is not None:
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, b"Bearer " + self.key):
                return 401, "missing or wrong API key", "authentication_error"
        return None

    def _same_site(self, origin: str, host: str) -> bool:
        origin = origin.rstrip("/").lower()
        if origin in self.origins:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc == host.lower()


def _hostname(host: str) -> str:
    """`127.0.0.1:8000` -> `127.0.0.1`, `[::1]:8000` -> `::1`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
