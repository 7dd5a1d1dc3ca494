"""Access control: bearer token, origin and host checks, body size limit, rate limits."""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from fastapi import HTTPException, Request

from mirage_lsd.server.settings import ServerSettings, is_loopback

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The WHIP/WHEP routes: the only ones other origins may use (players, OBS browser sources).
CORS_PATHS = re.compile(r"/whip(/[^/]+)?|/whep/[^/]+(/[^/]+)?")
#: Sent on every response to an allowed cross-origin request: clients read Location.
CORS_HEADERS = [(b"access-control-expose-headers", b"Location"), (b"vary", b"Origin")]
#: The preflight's answer besides Allow-Origin: what the WHIP/WHEP routes take.
PREFLIGHT_HEADERS = [
    (b"access-control-allow-methods", b"POST, PATCH, DELETE, OPTIONS"),
    (b"access-control-allow-headers", b"Authorization, Content-Type"),
    (b"access-control-max-age", b"600"),
]


def require_token(settings: ServerSettings) -> Callable[[Request], None]:
    """A FastAPI dependency: 401 unless `Authorization: Bearer TOKEN` matches (when set)."""

    def check(request: Request) -> None:
        if settings.token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(
            given.strip().encode(), settings.token.encode()
        ):
            raise HTTPException(
                401,
                "missing or wrong token: send 'Authorization: Bearer TOKEN' "
                "(the token is printed when the server starts)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check


class GuardMiddleware:
    """Pure ASGI middleware: host check, origin check, CORS and a request body size limit.

    - Host: on a loopback bind only loopback host names are served (stops DNS rebinding).
    - Origin: a browser request must come from this server's own origin; the origins in
      `extra_origins` (`*`: any) may also use the WHIP/WHEP routes, never /api.
    - CORS: a preflight (OPTIONS) from an allowed origin is answered here with 204, before
      the token check, since browsers send it without Authorization; the real request
      still needs the token.
    - Body: more than `max_body_bytes` is refused with 413, counted as it streams in.
    """

    def __init__(self, app: ASGIApp, settings: ServerSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        origin = headers.get("origin")
        shared = CORS_PATHS.fullmatch(scope["path"]) is not None
        problem = self._check(headers.get("host", ""), origin, shared)
        if problem is not None:
            await _refuse(send, *problem)
            return
        if origin is not None and shared:
            allow = [(b"access-control-allow-origin", origin.encode("latin-1")), *CORS_HEADERS]
            if scope["method"] == "OPTIONS":  # the preflight: no Authorization to check yet
                if headers.get("access-control-request-private-network") == "true":
                    allow.append((b"access-control-allow-private-network", b"true"))
                await _respond(send, 204, b"", [*allow, *PREFLIGHT_HEADERS])
                return
            send = _with_headers(send, allow)
        limit = self.settings.max_body_bytes
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _refuse(send, 413, f"request body over {limit} bytes")
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, f"request body over {limit} bytes")
            return message

        await self.app(scope, limited_receive, send)

    def _check(self, host: str, origin: str | None, shared: bool) -> tuple[int, str] | None:
        """(status, why) to refuse the request with, or None to let it through."""
        try:
            hostname = urlsplit(f"//{host}").hostname or ""
        except ValueError:  # "[", "x]", "[zz]": unbalanced or invalid IPv6 brackets
            return 400, "bad Host header"
        if self.settings.local_only and not is_loopback(hostname):
            return 403, f"host '{hostname}' not served: this server only answers on loopback"
        if origin is None or origin in (f"http://{host}", f"https://{host}"):
            return None  # not a browser (curl, aiortc clients) or the studio page itself
        extra = self.settings.extra_origins
        if "*" not in extra and origin not in extra:
            return 403, f"origin '{origin}' not allowed"
        if not shared:
            return 403, f"origin '{origin}' may use only WHIP and WHEP"
        return None


def _with_headers(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    """`send` that adds `extra` to the response's headers."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return wrapped


async def _refuse(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await _respond(send, status, body, [(b"content-type", b"application/json")])


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    headers = [*headers, (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class TokenBucket:
    """`rate` events per second with bursts of `burst`; `allow()` says whether one may pass."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self._clock = rate, float(burst), clock
        self._tokens, self._last = float(burst), clock()
        self.refused = 0

    def allow(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.refused += 1
        return False
