"""Access control: API keys (bearer tokens) and per-client token-bucket rate limits.

``AccessMiddleware`` guards the API (``/v1/*``) and ``/metrics``; the page, its static files,
the docs and the health checks stay open (a load balancer probes /readyz without a key).

- Keys come from ``GATESUM_API_KEYS`` and/or ``GATESUM_API_KEYS_FILE`` (``service/settings.py``).
  Only their SHA-256 digests are kept, and a presented token is hashed and compared with
  ``hmac.compare_digest`` against every digest, so neither the comparison time nor a memory
  dump gives a key away. A missing or unknown key: 401 with ``WWW-Authenticate: Bearer``.
- Rate limits are a token bucket per key (per client address when no keys are set): ``burst``
  requests at once, refilled at ``rate`` per second. Over it: 429 with ``Retry-After``, the
  whole seconds until one request's worth has refilled.

A middleware rather than a route dependency, so that a refused request is answered before its
body is read or parsed (FastAPI reads the body before it resolves dependencies).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from gatesum.model.errors import GatesumError
from gatesum.service.limits import refuse
from gatesum.service.metrics import Metrics
from gatesum.service.settings import Settings

PROTECTED = ("/v1/", "/metrics")  # path prefixes that need a key when keys are set
DIGEST_PREFIX = "sha256:"
UNAUTHORIZED = "A valid API key is required: send 'Authorization: Bearer <key>'."
CHALLENGE = {"www-authenticate": 'Bearer realm="gatesum"'}
MAX_CLIENTS = 10_000  # buckets kept (least recently used dropped): scanning addresses cannot grow it


def digest(key: str) -> str:
    """The hex SHA-256 of a key: what a keys file may hold instead of the key itself."""
    return hashlib.sha256(key.encode()).hexdigest()


def parse_keys(entries: list[str], where: str) -> dict[str, str]:
    """``["alice=s3cret", "bob=sha256:<hex>", "k3y"]`` -> {digest: client name}. A bare key is named
    ``key-<n>``; GatesumError names the bad entry (by position, never by its secret)."""
    keys: dict[str, str] = {}
    for number, entry in enumerate(entries, 1):
        name, _, secret = entry.strip().partition("=") if "=" in entry else ("", "", entry.strip())
        name = name.strip() or f"key-{number}"
        if secret.startswith(DIGEST_PREFIX):
            hexdigest = secret.removeprefix(DIGEST_PREFIX).lower()
            if len(hexdigest) != 64 or any(c not in "0123456789abcdef" for c in hexdigest):
                raise GatesumError(f"{where}, entry {number} ({name}): sha256: needs 64 hex digits")
        elif len(secret) < 16:
            raise GatesumError(f"{where}, entry {number} ({name}): a key needs at least 16 characters")
        else:
            hexdigest = digest(secret)
        keys[hexdigest] = name
    return keys


def load_keys(settings: Settings) -> dict[str, str]:
    """Every configured key as {digest: client name}; empty when authentication is off."""
    text = settings.api_keys.get_secret_value()
    keys = parse_keys([entry for entry in text.split(",") if entry.strip()], "GATESUM_API_KEYS")
    if settings.api_keys_file is not None:
        path = Path(settings.api_keys_file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise GatesumError(f"GATESUM_API_KEYS_FILE: cannot read it ({type(error).__name__})") from None
        entries = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
        keys |= parse_keys(entries, f"GATESUM_API_KEYS_FILE {path.name}")
    return keys


@dataclass
class Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """One token bucket per client: ``burst`` tokens, refilled at ``rate`` per second."""

    def __init__(self, rate: float, burst: int, clock=time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.buckets: OrderedDict[str, Bucket] = OrderedDict()

    def take(self, client: str) -> float:
        """Take one token: 0.0 when there was one, else the seconds until there will be."""
        now = self.clock()
        bucket = self.buckets.pop(client, None) or Bucket(float(self.burst), now)
        self.buckets[client] = bucket  # most recently used last
        if len(self.buckets) > MAX_CLIENTS:
            self.buckets.popitem(last=False)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate


class AccessMiddleware:
    """401 without a known key, 429 over the client's rate, on the protected paths only."""

    def __init__(self, app: ASGIApp, keys: dict[str, str], buckets: TokenBuckets | None,
                 metrics: Metrics) -> None:  # fmt: skip
        self.app, self.keys, self.buckets, self.metrics = app, keys, buckets, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED):
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("unknown", 0))[0]
        if self.keys:
            client = self.client_name(dict(scope["headers"]).get(b"authorization", b""))
            if client is None:
                self.metrics.rejected.labels("unauthorized").inc()
                await refuse(send, HTTPException(401, UNAUTHORIZED, headers=CHALLENGE))
                return
        if self.buckets is not None:
            wait = self.buckets.take(client)
            if wait > 0:
                self.metrics.rejected.labels("rate_limited").inc()
                retry = max(1, math.ceil(wait))
                message = f"Too many requests; retry in {retry} s."
                await refuse(send, HTTPException(429, message, headers={"retry-after": str(retry)}))
                return
        await self.app(scope, receive, send)

    def client_name(self, authorization: bytes) -> str | None:
        """The name of the key in a ``Bearer <key>`` header, or None. Every digest is compared
        (in constant time each), so the time taken does not depend on which key matched."""
        scheme, _, token = authorization.decode("latin-1").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        presented = digest(token.strip())
        name = None
        for known, client in self.keys.items():
            if hmac.compare_digest(known, presented):
                name = client
        return name
