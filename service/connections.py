"""``HeadTimeoutProtocol``: uvicorn's h11 protocol with a deadline for each request's head.

uvicorn limits idle keep-alive connections (``timeout_keep_alive``), but any byte received
cancels that timer, and nothing limits how long a request line and its headers may take: a
client that sends one byte every few seconds holds its connection for ever (slowloris; 400 such
connections were held for a whole test). Here the head of each request must be complete within
``header_timeout_s`` of the connection opening or of the previous response; past it the
connection gets 408 (or, when nothing of a request has arrived, is just closed) and is closed.

Body timeouts are the ASGI layer's (``limits.RequestLimitsMiddleware``), so that they hold under
any server. ``gatesum serve`` runs this protocol (``--http`` is not a flag); by its import string,
so that each worker process builds it.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from gatesum.service.settings import get_settings

IMPORT_STRING = "gatesum.service.connections:HeadTimeoutProtocol"


def timeout_response(seconds: float) -> bytes:
    body = f'{{"error": "The request head did not arrive within {seconds:g} s."}}'.encode()
    return (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )


class HeadTimeoutProtocol(H11Protocol):
    header_timeout_s: float | None = None  # None: GATESUM_HEADER_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.head_deadline: asyncio.TimerHandle | None = None
        self.head_started = False  # some bytes of the next request have arrived
        self._arm_head_deadline()

    def data_received(self, data: bytes) -> None:
        self.head_started = self.head_started or bool(data)
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the head is complete: the deadline is met
            self._cancel_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self.head_started = bool(self.conn.trailing_data[0])  # a pipelined request's start
            self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        self._cancel_head_deadline()
        seconds = self.header_timeout_s or get_settings().header_timeout_s
        self.head_deadline = self.loop.call_later(seconds, self._head_timed_out, seconds)

    def _cancel_head_deadline(self) -> None:
        if getattr(self, "head_deadline", None) is not None:
            self.head_deadline.cancel()
            self.head_deadline = None

    def _head_timed_out(self, seconds: float) -> None:
        self.head_deadline = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.head_started:  # a partial request: say why (h11 cannot answer a request it has not got)
            self.transport.write(timeout_response(seconds))
        self.transport.close()
