"""Error responses: one shape, ``{"error": "<sentences>", "detail": [...]}``, and words a user
understands in ``error`` (``detail`` keeps pydantic's machine-readable items for a 422).

    400  the body is not UTF-8 text
    401  no known API key (``security.AccessMiddleware``, when keys are set)
    408  the body did not arrive in time (``limits.RequestLimitsMiddleware``)
    413  the body is over the size limit (``limits.RequestLimitsMiddleware``)
    415  the body is not ``application/json``, or is compressed
    422  the body is not JSON, or a field is missing, of the wrong type or out of bounds, or a
         text has nothing left once control characters are removed, or the model has no content
         selector for the extractive mode or the copy mask asked
    429  the client is over its rate (with Retry-After; ``security.AccessMiddleware``)
    503  the model is loading (with Retry-After) or failed to load, or the queue is full
    504  the request took longer than the service's timeout

What a client reads names no file path and no library's internals: ``public`` strips them
(the log keeps the whole message).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

log = logging.getLogger("gatesum.service")

# pydantic's error type -> a sentence about the field ``{field}``; ``{...}`` else from its ctx
SENTENCES = {
    "missing": "{field} is missing.",
    "string_type": "{field} must be a string.",
    "string_too_long": "{field} is longer than {max_length:,} characters.",
    "less_than_equal": "{field} must be at most {le}.",
    "less_than": "{field} must be less than {lt}.",
    "greater_than_equal": "{field} must be at least {ge}.",
    "greater_than": "{field} must be greater than {gt}.",
    "int_type": "{field} must be a whole number.",
    "int_parsing": "{field} must be a whole number.",
    "int_from_float": "{field} must be a whole number.",
    "float_type": "{field} must be a number.",
    "float_parsing": "{field} must be a number.",
    "list_type": "{field} must be a list.",
    "too_long": "{field} holds more than {max_length} items.",
    "extra_forbidden": "{field} is not a known field.",
    "model_attributes_type": "{field} must be a JSON object.",
    "dict_type": "{field} must be a JSON object.",
    "literal_error": "{field} must be {expected}.",
}


# an absolute or dot-relative path: /srv/models/x/config.json, ../shared/data/train.jsonl.gz
PATH = re.compile(r"""(?<![\w:/])\.{0,2}/[^\s:;,()'"]+""")


# what marks a parenthesized detail as a library's words: "Internal: src/x.cc(1102) [...]",
# "Expecting value: line 1 column 2 (char 1)", "__init__() got ...", "missing ['encoder.w']"
INTERNALS = re.compile(r": |[\[\]()_/\\]")


def public(message: str, *known: str | Path) -> str:
    """``message`` without file paths (each becomes its last name: a bundle directory's name, a
    file's name; ``known`` paths first, which may hold spaces) and without the parenthesized
    details that follow a word and a space and read like a library's internals (``INTERNALS``);
    our own advice stays ("(set GATESUM_MODEL ...)", "(auto, cpu, cuda, cuda:N or mps)")."""
    for path in sorted(map(str, known), key=len, reverse=True):
        if path.strip("/"):
            message = message.replace(path.rstrip("/"), Path(path).name)
    message = PATH.sub(lambda match: match.group().rstrip("/").rsplit("/", 1)[-1] or "/", message)
    kept, group, depth = [], [], 0
    for character in message:
        if character == "(" and (depth or kept[-1:] == [" "]):
            depth += 1
        (group if depth else kept).append(character)
        if character == ")" and depth:
            depth -= 1
            if not depth:
                if "GATESUM_" in "".join(group) or not INTERNALS.search("".join(group)[1:-1]):
                    kept += group
                else:
                    kept.pop()  # the space before it
                group = []
    return "".join(kept + group)


def field_name(loc: Sequence[str | int]) -> str:
    """``("body", "text")`` -> "The text"; ``("body", "texts", 1)`` -> "texts[1]"; ``("body",)`` ->
    "The request body"; a query parameter by its name."""
    parts = list(loc[1:] if loc and loc[0] == "body" else loc)
    if not parts:
        return "The request body"
    if parts == ["text"]:
        return "The text"
    return str(parts[0]) + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts[1:])


def sentence(error: dict[str, Any]) -> str:
    """One pydantic (or FastAPI) validation error as a plain sentence."""
    kind, ctx, loc = error["type"], error.get("ctx") or {}, error["loc"]
    field = field_name(loc)
    if kind == "json_invalid":  # FastAPI's: loc is ("body", character offset), ctx the decoder's words
        return f"The request body is not valid JSON ({ctx.get('error', 'JSON decode error')})."
    if kind in ("string_too_short", "too_short") and ctx.get("min_length") == 1:
        return f"{field} is empty."
    if kind == "string_too_short":
        return f"{field} is shorter than {ctx['min_length']:,} characters."
    if kind == "too_short":
        return f"{field} must hold at least {ctx['min_length']} items."
    if kind == "value_error":  # our validators: a predicate on the field, or a whole-body sentence
        message = str(ctx.get("error", error["msg"]))
        return f"{message}." if len(loc) <= 1 else f"{field} {message}."
    try:
        return SENTENCES[kind].format(field=field, **ctx)
    except (KeyError, IndexError, ValueError):  # a type we have no sentence for: pydantic's words
        return f"{field}: {error['msg']}."


def json_position(document: str, offset: int) -> str:
    """Where a character offset is, as "line L, column C" (counted as ``json.JSONDecodeError`` does)."""
    line = document.count("\n", 0, offset) + 1
    column = offset - document.rfind("\n", 0, offset)
    return f"line {line}, column {column}"


async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    """422 naming each bad field in a sentence; the offending input is not echoed (it may be 100k
    characters)."""
    errors = list(error.errors())
    for item in errors:
        if item["type"] == "json_invalid" and isinstance(error.body, str) and len(item["loc"]) == 2:
            ctx = item.get("ctx") or {}
            where = json_position(error.body, item["loc"][1])
            item["ctx"] = {**ctx, "error": f"{where}: {ctx.get('error', 'JSON decode error')}"}
    detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]
    reason = " ".join(sentence(e) for e in errors)
    return JSONResponse({"error": reason, "detail": detail}, status_code=422)


async def http_error(request: Request, error: HTTPException) -> JSONResponse:
    service = getattr(request.app.state, "service", None)
    message = public(str(error.detail), *([service.settings.model] if service else []))
    if error.status_code == 400 and isinstance(error.__cause__, UnicodeDecodeError):
        # FastAPI's body parsing says only "There was an error parsing the body"
        cause = error.__cause__
        message = (
            f"The request body is not valid UTF-8 text (byte 0x{cause.object[cause.start]:02x} "
            f"at offset {cause.start})."
        )
    return JSONResponse({"error": message}, status_code=error.status_code, headers=error.headers)


async def internal_error(request: Request, error: Exception) -> JSONResponse:
    """Never a stack trace to the client: it goes to the log."""
    log.error("%s %s failed", request.method, request.url.path, exc_info=error)
    return JSONResponse({"error": "internal error; see the service log"}, status_code=500)
