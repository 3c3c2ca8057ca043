"""``RequestLimitsMiddleware``: what a request body must be before it is read, and how it must arrive.

Pure ASGI, in this order, each answered in the app's error shape:

- 415 for a body that is not ``application/json`` (charset, if stated, UTF-8), or that is
  compressed (any ``Content-Encoding`` but identity): the routes read JSON only;
- 413 for a declared ``Content-Length`` over ``max_bytes``; a chunked (or lying) body is counted
  as it arrives, and reading stops at the first byte over the limit;
- 408 when a piece of the body takes longer than ``body_timeout_s`` to arrive (a client that
  announced 5,000 bytes and sent 150 is not waited on for ever).

413 and 408 close the connection (``Connection: close``): the rest of the body is not read.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

JSON = "application/json"
CLOSE = {"connection": "close"}


class BodyTooLarge(HTTPException):
    """Raised from ``receive``: FastAPI passes HTTPExceptions through its body parsing (others
    become a 400), so the app's handler answers 413; a bare ASGI app gets it from here."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"The request body is larger than {max_bytes:,} bytes.", headers=CLOSE)


class BodyTimeout(HTTPException):
    def __init__(self, seconds: float) -> None:
        super().__init__(408, f"The request body did not arrive within {seconds:g} s.", headers=CLOSE)


def media_type_error(headers: dict[bytes, bytes]) -> str | None:
    """Why a body with these headers is not JSON we read (a 415), or None when it is."""
    encoding = headers.get(b"content-encoding", b"identity").decode("latin-1").strip().lower()
    if encoding not in ("", "identity"):
        return f"The request body must not be compressed (Content-Encoding: {encoding[:40]})."
    content_type = headers.get(b"content-type", b"").decode("latin-1")
    media_type, *parameters = (part.strip().lower() for part in content_type.split(";"))
    if media_type != JSON:
        shown = f"not {media_type[:60]}" if media_type else "and none was given"
        return f"The request body must be sent as Content-Type: {JSON} ({shown})."
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip() == "charset" and value.strip().strip('"') not in ("utf-8", "utf8"):
            return f"The request body must be UTF-8 JSON (charset {value.strip()[:20]} is not read)."
    return None


class RequestLimitsMiddleware:
    """``json_routes``: the paths whose POST reads a JSON body (others answer 404/405 as they do),
    asked for at the first request, once every route exists."""

    def __init__(self, app: ASGIApp, max_bytes: int, body_timeout_s: float,
                 json_routes: Callable[[], set[str]]) -> None:  # fmt: skip
        self.app, self.max_bytes, self.body_timeout_s = app, max_bytes, body_timeout_s
        self.find_json_routes = json_routes
        self.json_routes: set[str] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if self.json_routes is None:
            self.json_routes = self.find_json_routes()
        if scope["method"] == "POST" and scope["path"] in self.json_routes:
            problem = media_type_error(headers)
            if problem:
                await refuse(send, HTTPException(415, problem))
                return
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await refuse(send, BodyTooLarge(self.max_bytes))
            return
        received = 0
        body_done = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # after the body: waiting for a disconnect, which may take any time
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout_s)
            except asyncio.TimeoutError:
                raise BodyTimeout(self.body_timeout_s) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
                body_done = not message.get("more_body", False)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except (BodyTooLarge, BodyTimeout) as error:
            if not started:
                await refuse(send, error)


async def refuse(send: Send, error: HTTPException) -> None:
    body = json.dumps({"error": error.detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(name.encode(), value.encode()) for name, value in (error.headers or {}).items()]
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
