"""``POST /v1/memory``: where each cell forgets a key planted before the visitor's text; and
``GET /v1/memory/examples``, the texts the page offers. The work is in ``memory_state``."""

from __future__ import annotations

from fastapi import APIRouter

from gatesum.service.memory_schemas import MemoryExamples, MemoryRequest, MemoryResponse
from gatesum.service.memory_state import ReadyMemory
from gatesum.service.routes import ERRORS

memory_router = APIRouter()


@memory_router.post("/v1/memory", response_model=MemoryResponse, responses=ERRORS)
async def memory(request: MemoryRequest, service: ReadyMemory) -> MemoryResponse:
    """Plant a key before the text; per cell, the recall after every token, the answer at the end
    and the memory trace. Time linear in the text's length (~25,000 tokens for 100,000 characters)."""
    return await service.run(request)


@memory_router.get("/v1/memory/examples", response_model=MemoryExamples, responses=ERRORS)
def memory_examples(service: ReadyMemory) -> MemoryExamples:
    """Example texts for the page, from the data folder when it is there (else none)."""
    return MemoryExamples(examples=service.examples)
