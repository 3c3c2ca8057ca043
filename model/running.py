"""``RunningBatch``: iteration-level (continuous) batching of ``Summarizer`` decoding, as LLM
servers do it (Orca, Yu et al. 2022; vLLM, Kwon et al. 2023).

Examples join the running decoder batch and leave it at step boundaries, so that no example
waits for another's last token:

- ``admit`` encodes new sources and appends their rows (K = beam_size per example);
- ``step`` runs one decoder step for every row of every example, whatever its generation
  settings, then advances each settings group's search (``Search``, model/search.py; the beams
  of one example stay together there) and retires the examples whose search is over;
- ``cancel`` drops examples at once (a client that went away).

A retired or cancelled example frees its rows at once: the last rows of the tables move into
the holes, so the live rows stay a prefix [0, R) and a step computes nothing for dead ones.
Per example, the tables hold the encoder memory the attention reads (E, S, M) and its keys
(E, S, A), read once per step for all the example's rows (``RowGrid``); per row, the source
ids and their mask (R, S), and where the row sits in the grid (its example and beam). Example
slots are freed the same way, the last ones moving into the holes. S is the longest source in
the batch, rounded up to ``WIDTH_STEP`` so that the tables are rebuilt only when that bucket
changes. Padding positions get attention weight exactly 0, so every example decodes to the
tokens ``Summarizer.generate`` gives it alone (tests/model/test_search.py holds them equal).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from gatesum.model.attention import RowGrid
from gatesum.model.copy_mask import copy_masked
from gatesum.model.decoder import DecoderState
from gatesum.model.encoder import EncoderOutput
from gatesum.model.search import GenerationConfig, Search, fit_width
from gatesum.model.summarizer import Summarizer, beam_rows

WIDTH_STEP = 8  # source positions: the tables' width is a multiple of this (attention reads it all)


@dataclass
class Decoded:
    """One example's summary ids (without BOS/EOS) and, on request, its attention (t + 1, S)."""

    handle: Hashable
    tokens: list[int]
    attention: Tensor | None = None


@dataclass
class _Group:
    """The examples that share one generation setting: one search, rows anywhere in the tables."""

    search: Search
    slots: Tensor  # (N,) the table row of each of the search's rows
    handles: list = field(default_factory=list)  # per example, in the search's order


class RunningBatch:
    def __init__(self, model: Summarizer) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.track_coverage = model.decoder.coverage_in_use()
        self.groups: dict[tuple[GenerationConfig, bool], _Group] = {}
        self.rows = 0  # live rows: the prefix [0, rows) of every row table
        self.examples_held = 0  # live example slots: the prefix [0, examples_held) of memory and keys
        self.memory: Tensor | None = None  # (example capacity, S, M) encoder outputs
        self.keys: Tensor | None = None  # (example capacity, S, A) attention keys
        self.source: Tensor | None = None  # (capacity, S) source ids, PAD beyond each length
        self.mask: Tensor | None = None  # (capacity, S) True at real tokens
        self.lengths = torch.zeros(0, dtype=torch.long, device=self.device)  # (capacity,)
        self.example_of = torch.zeros(0, dtype=torch.long, device=self.device)  # (capacity,) its slot
        self.beam_of = torch.zeros(0, dtype=torch.long, device=self.device)  # (capacity,) 0..K−1
        self.state: DecoderState | None = None  # (R, ...)

    @property
    def examples(self) -> int:
        return sum(group.search.examples for group in self.groups.values())

    @torch.no_grad()
    def admit(
        self,
        sources: Sequence[Sequence[int]],
        generation: GenerationConfig,
        handles: Sequence[Hashable],
        explain: bool = False,
        copy_sources: Sequence[Sequence[int]] | None = None,
    ) -> list | None:
        """Encode ``sources`` (token ids, already truncated) and add them to the batch, one
        example per source, named by ``handles``; with ``explain``, their attention is kept and
        the encoder's gates (per layer·direction, name -> (B, S, H)) are returned.
        ``copy_sources``: the bottom-up copy mask, the same ids with PAD where copying is not
        allowed (model/copy_mask.py), kept in the source table that only the copy term reads."""
        model, K = self.model, generation.beam_size
        pad = model.config.pad_id
        width = max(map(len, sources))
        source = torch.tensor([[*row, *[pad] * (width - len(row))] for row in sources], device=self.device)
        lengths = torch.tensor([len(row) for row in sources], device=self.device)  # (B,)
        encoded = model.encoder(source, lengths, return_gates=explain)
        gates = encoded.gates
        if copy_sources is not None:
            masked = [[*row, *[pad] * (width - len(row))] for row in copy_sources]
            encoded = replace(encoded, source=torch.tensor(masked, device=self.device))  # (B, S)
        keys = model.decoder.keys(encoded)  # per example
        per_row, layers = beam_rows(encoded, model.bridge(encoded), K)  # (B·K, ...)
        state = model.decoder.initial_state(per_row, layers, self.track_coverage)
        slots = self._append(encoded, keys, per_row, K, state)
        key = (replace(generation, source_lengths=None), explain)
        if key not in self.groups:
            config = model.config
            search = Search(key[0], config.bos_id, config.eos_id, pad, self.device, return_attention=explain)
            self.groups[key] = _Group(search, slots[:0])
        group = self.groups[key]
        group.search.add(len(sources), lengths.tolist())
        group.slots = torch.cat([group.slots, slots])
        group.handles.extend(handles)
        return gates

    @torch.no_grad()
    def step(self) -> list[Decoded]:
        """One decoder step for every row; returns the examples it finished (and retires them)."""
        if self.rows == 0:
            return []
        R, decoder = self.rows, self.model.decoder
        last = torch.empty(R, dtype=torch.long, device=self.device)
        for group in self.groups.values():
            last[group.slots] = group.search.last
        E = self.examples_held
        encoded = EncoderOutput(self.memory[:E], self.mask[:R], self.source[:R], None, None)
        output, state = decoder.step(last, self.state, encoded, self.keys[:E], self._grid())
        copied = output
        if any(key[0].copy_mask_threshold > 0 for key in self.groups):  # rows without a mask: unchanged
            copied = copy_masked(output, encoded, self.model.config.pad_id)
        log_probs = decoder.log_probs(copied, encoded.source)  # (R, V)
        order = torch.arange(R, device=self.device)  # which row's state each row continues
        for group in self.groups.values():
            every_row = len(self.groups) == 1 and torch.equal(group.slots, order)  # no copies then
            attention = output.attention
            if attention is not None and group.search.reads_attention:
                attention = attention if every_row else attention[group.slots]
            rows = group.search.advance(log_probs if every_row else log_probs[group.slots], attention)
            order[group.slots] = group.slots[rows]
        self.state = state.index_select(order) if any(key[0].beam_size > 1 for key in self.groups) else state
        return self._retire()

    def cancel(self, handles: set[Hashable]) -> None:
        """Drop the examples named by ``handles`` now, without results."""
        dead = []
        for group in self.groups.values():
            examples = [index for index, handle in enumerate(group.handles) if handle in handles]
            if examples:
                dead.append(self._remove(group, examples))
        self._free(dead)

    def _retire(self) -> list[Decoded]:
        finished, dead = [], []
        for group in self.groups.values():
            examples = group.search.done()
            if not examples:
                continue
            result = group.search.results(examples)
            attentions = result.attention or [None] * len(examples)
            for example, tokens, attention in zip(examples, result.tokens, attentions, strict=True):
                finished.append(Decoded(group.handles[example], tokens, attention))
            dead.append(self._remove(group, examples))
        self._free(dead)
        return finished

    def _remove(self, group: _Group, examples: list[int]) -> Tensor:
        """Take ``examples`` out of their group; returns their table rows."""
        kept = group.search.remove(examples)
        alive = torch.zeros(len(group.slots), dtype=torch.bool, device=self.device)
        alive[kept] = True
        dead = group.slots[~alive]
        group.slots = group.slots[kept]
        gone = set(examples)
        group.handles = [handle for index, handle in enumerate(group.handles) if index not in gone]
        return dead

    def _free(self, dead: list[Tensor]) -> None:
        """Move the last live rows into the holes that ``dead`` rows leave, and the last live
        example slots into the holes their examples leave (an example's rows all go at once)."""
        if not dead:
            return
        self.groups = {key: group for key, group in self.groups.items() if group.search.examples}
        dead_rows = torch.cat(dead)
        dead_examples = self.example_of[dead_rows].unique()
        R, E = self.rows, self.examples_held
        kept, kept_examples = R - len(dead_rows), E - len(dead_examples)
        holes, movers = _holes_and_movers(dead_rows, R, kept)
        for table in (self.source, self.mask, self.lengths, self.example_of, self.beam_of):
            table.index_copy_(0, holes, table.index_select(0, movers))
        order = torch.arange(kept, device=self.device)
        order[holes] = movers
        self.state = self.state.index_select(order)
        moved = torch.arange(R, device=self.device)
        moved[movers] = holes
        for group in self.groups.values():
            group.slots = moved[group.slots]
        holes, movers = _holes_and_movers(dead_examples, E, kept_examples)
        for table in (self.memory, self.keys):
            table.index_copy_(0, holes, table.index_select(0, movers))
        renamed = torch.arange(E, device=self.device)
        renamed[movers] = holes
        self.example_of[:kept] = renamed[self.example_of[:kept]]
        self.rows, self.examples_held = kept, kept_examples
        self._reserve(kept, kept_examples, int(self.lengths[:kept].max()) if kept else 0)

    def _grid(self) -> RowGrid:
        """Where each live row sits among the live examples' memory: at (its example, its beam)
        of an (E, G) grid, G the largest beam in the batch."""
        width = max(key[0].beam_size for key in self.groups)
        R = self.rows
        return RowGrid(self.example_of[:R] * width + self.beam_of[:R], width)

    def _append(self, encoded: EncoderOutput, keys: Tensor, per_row: EncoderOutput, beams: int,
                state: DecoderState) -> Tensor:  # fmt: skip
        """Write new examples after the live ones: their memory and keys (B, S, ·) once each,
        and their rows' source and mask (``per_row``, (B·K, S), ``beam_rows``' order): row n is
        beam n mod K of example n // K, K = ``beams``. Returns the rows' table rows."""
        B, S = encoded.source.shape
        N = per_row.source.shape[0]
        R, E = self.rows, self.examples_held
        self._reserve(R + N, E + B, max(S, int(self.lengths[:R].max()) if R else 0))
        pad = self.model.config.pad_id
        new_rows, new_examples = slice(R, R + N), slice(E, E + B)
        columns = (
            (self.memory, encoded.outputs, 0.0, new_examples),
            (self.keys, keys, 0.0, new_examples),
            (self.source, per_row.source, pad, new_rows),
            (self.mask, per_row.mask, False, new_rows),
        )
        for table, values, fill, new in columns:
            table[new, S:] = fill  # a freed slot may hold an old example's values
            table[new, :S] = values
        self.lengths[new_rows] = per_row.mask.sum(1)
        self.example_of[new_rows] = torch.arange(E, E + B, device=self.device).repeat_interleave(beams)
        self.beam_of[new_rows] = torch.arange(beams, device=self.device).repeat(B)
        if state.coverage is not None:
            state = replace(state, coverage=fit_width(state.coverage, self.source.shape[1]))
        self.state = state if self.state is None or R == 0 else _concatenate(self.state, state)
        self.rows, self.examples_held = R + N, E + B
        return torch.arange(R, R + N, device=self.device)

    def _reserve(self, rows: int, examples: int, longest: int) -> None:
        """Rebuild the tables to hold ``rows`` rows and ``examples`` examples (doubling, so that
        joining rarely copies) and sources of ``longest`` tokens (narrowing too, when that saves
        a quarter of the width)."""
        width = -(-max(longest, 1) // WIDTH_STEP) * WIDTH_STEP
        capacity, current = self.source.shape if self.source is not None else (0, 0)
        example_capacity = self.memory.shape[0] if self.memory is not None else 0
        if (capacity >= rows and example_capacity >= examples and current >= width
                and not width <= current * 3 // 4):  # fmt: skip
            return
        capacity = capacity if capacity >= rows else max(rows, 2 * capacity)
        if example_capacity < examples:
            example_capacity = max(examples, 2 * example_capacity)
        R, E, model = self.rows, self.examples_held, self.model
        dtype = next(model.parameters()).dtype
        old = (self.memory, self.keys, self.source, self.mask)
        self.memory = torch.zeros(
            example_capacity, width, model.config.encoder_output_size, dtype=dtype, device=self.device
        )
        self.keys = torch.zeros(example_capacity, width, self._keys_size(), dtype=dtype, device=self.device)
        self.source = torch.full((capacity, width), model.config.pad_id, dtype=torch.long, device=self.device)
        self.mask = torch.zeros(capacity, width, dtype=torch.bool, device=self.device)
        for name in ("lengths", "example_of", "beam_of"):
            table = torch.zeros(capacity, dtype=torch.long, device=self.device)
            table[:R] = getattr(self, name)[:R]
            setattr(self, name, table)
        if old[0] is not None:
            keep = min(width, current)
            tables = (self.memory, self.keys, self.source, self.mask)
            for table, previous, live in zip(tables, old, (E, E, R, R), strict=True):
                table[:live, :keep] = previous[:live, :keep]
        if self.state is not None and self.state.coverage is not None:
            self.state = replace(self.state, coverage=fit_width(self.state.coverage, width))

    def _keys_size(self) -> int:
        """The last dimension of ``Decoder.keys``: attention size (mlp), else the query size."""
        config = self.model.config
        if config.attention == "mlp":
            return config.attention_size
        return config.encoder_output_size if config.attention == "dot" else config.decoder_hidden_size


def _concatenate(first: DecoderState, second: DecoderState) -> DecoderState:
    """Two states' rows, one after the other."""

    def join(a, b):
        if a is None:
            return None
        if isinstance(a, tuple):
            return tuple(torch.cat([x, y]) for x, y in zip(a, b, strict=True))
        return torch.cat([a, b])

    return DecoderState(
        layers=[join(a, b) for a, b in zip(first.layers, second.layers, strict=True)],
        attentional=join(first.attentional, second.attentional),
        coverage=join(first.coverage, second.coverage),
    )


def _holes_and_movers(dead: Tensor, live: int, kept: int) -> tuple[Tensor, Tensor]:
    """Of ``live`` slots, ``dead`` ones leave and ``kept`` stay: the dead slots below ``kept``
    (the holes) and the live ones at or above it (the movers, as many), each ascending."""
    is_dead = torch.zeros(live, dtype=torch.bool, device=dead.device)
    is_dead[dead] = True
    return is_dead[:kept].nonzero().flatten(), (~is_dead[kept:]).nonzero().flatten() + kept
