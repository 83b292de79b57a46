"""The server's outer wall, as plain ASGI middleware: it runs before FastAPI reads a byte of the body.

- POST bodies: the content type must be the route's (JSON, or multipart for uploads), else 415; a body
  larger than the limit is refused (413) from its Content-Length or while it streams, never buffered
  past the limit; all bodies buffered at once stay under a total budget (429 past it).
- Every response gets headers that keep a browser from sniffing types or loading anything from
  elsewhere (the page is self-contained: no CDN).
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        b"connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    ),
]


def expected_content_type(path: str) -> str | None:
    if not path.startswith("/api/"):
        return None
    return "multipart/form-data" if path.endswith("/reconstruct") else "application/json"


class RequestGuard:
    def __init__(self, app: ASGIApp, max_body_bytes: int, max_buffered_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_buffered_bytes = max_buffered_bytes
        self.buffered_bytes = 0  # bodies being read right now; one event loop, so a plain int is safe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _with_headers(send)
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = {key.lower(): value for key, value in scope["headers"]}
        refusal = self._check_headers(scope["path"], headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        held = [0]  # bytes of this request's body counted in buffered_bytes until the response is done
        try:
            body = await self._read_body(receive, held)
            if isinstance(body, JSONResponse):
                await body(scope, receive, send)
                return
            pending = [{"type": "http.request", "body": body, "more_body": False}]

            async def replay() -> Message:
                return pending.pop() if pending else await receive()

            await self.app(scope, replay, send)
        finally:
            self.buffered_bytes -= held[0]

    def _check_headers(self, path: str, headers: dict[bytes, bytes]) -> JSONResponse | None:
        expected = expected_content_type(path)
        given = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        if expected is not None and given != expected:
            return error(415, f"content type must be {expected}, got {given or 'none'}")
        length = headers.get(b"content-length")
        if length is not None:
            if not length.strip().isdigit():
                return error(400, "malformed Content-Length header")
            if int(length) > self.max_body_bytes:
                return error(413, f"request body over the limit of {self.max_body_bytes:,} bytes")
        return None

    async def _read_body(self, receive: Receive, held: list[int]) -> bytes | JSONResponse:
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return error(400, "client disconnected")
            chunk = message.get("body", b"")
            held[0] += len(chunk)
            self.buffered_bytes += len(chunk)
            if held[0] > self.max_body_bytes:
                return error(413, f"request body over the limit of {self.max_body_bytes:,} bytes")
            if self.buffered_bytes > self.max_buffered_bytes:
                return error(429, "busy receiving other uploads; retry shortly", retry_after=1)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def error(status: int, message: str, retry_after: int | None = None) -> JSONResponse:
    """The body of every error the server gives: {"error": one line}."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"error": message.splitlines()[0] if message else "error"}, status, headers=headers)


def _with_headers(send: Send) -> Send:
    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            present = {key.lower() for key, _ in message.get("headers", [])}
            extra = [(key, value) for key, value in SECURITY_HEADERS if key not in present]
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return send_with_headers
