"""The recall task and its training loop, shared by the sweep (``gatesum memory``) and the
shipped models (``gatesum memory ship``).

A document opens with a key, a code word of ``key_length`` symbols out of ``key_symbols``,
followed by L tokens of filler: real CNN/DailyMail text, tokenized by the bundled summarizer's
tokenizer, or random tokens. L is the lag. The model (``gatesum.model.recall.RecallModel``)
must name the key from its hidden state alone; there is no attention, which would let any RNN
look back at the key directly and hide the very effect measured here.
"""

from __future__ import annotations

import gzip
import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gatesum.model.bundle import BUNDLED_MODEL, TOKENIZER_FILE
from gatesum.model.errors import GatesumError
from gatesum.model.init import apply_gate_init
from gatesum.model.recall import RecallConfig, RecallModel
from gatesum.model.tokenizer import Tokenizer

TOKENIZER = BUNDLED_MODEL / TOKENIZER_FILE  # the pieces the shipped models read


@dataclass
class MemoryConfig:
    """One sweep: cells × lags × seeds × gate inits, each point under the same budget."""

    cells: tuple[str, ...] = ("rnn", "gru", "lstm", "lstm-peephole")
    lags: tuple[int, ...] = (10, 30, 100, 300, 1000)
    seeds: int = 2
    default_init_lags: tuple[int, ...] = (30, 100)  # where gated cells also run "default"
    key_symbols: int = 8  # chance is 1 / key_symbols^key_length
    key_length: int = 1
    filler_vocab: int = 512  # text pieces with their own embedding; the rest share one
    embedding_size: int = 16
    hidden_size: int = 32
    batch_size: int = 32
    learning_rate: float = 1e-2  # 3e-3 left L = 300 unsolved in 300 steps (H = 32)
    grad_clip: float = 1.0
    # the loss reads out after every filler token (lags 1…L at once, a curriculum), not only at
    # the end; the score is the final state's either way. Final-only left the LSTM at L = 1,000
    # near chance after 400 steps, where the GRU needed ~210.
    every_position: bool = True
    chrono_span: float = 1.0  # chrono memory times up to chrono_span × the document length
    max_steps: int = 400  # the budget per point, the same for every cell
    max_seconds: float = 3600.0  # a runaway guard only: steps are the budget (a shared CPU is slow)
    eval_size: int = 256
    solved_accuracy: float = 0.99
    device: str = "cpu"

    def model_config(self, cell: str) -> RecallConfig:
        return RecallConfig(
            cell=cell,
            text_pieces=self.filler_vocab,
            key_symbols=self.key_symbols,
            key_length=self.key_length,
            embedding_size=self.embedding_size,
            hidden_size=self.hidden_size,
        )


# --- filler: what the key must be remembered across ------------------------------------------


@dataclass
class Filler:
    """Filler positions: n in [0, vocab) is the model's text row K + n (n = vocab − 1 is "rare"
    for text). ``stream`` is the text to cut windows from (None: uniformly random positions);
    ``pieces`` the tokenizer ids with their own row, most frequent first."""

    name: str
    vocab: int
    stream: Tensor | None = None
    pieces: Tensor | None = None

    def __call__(self, batch: int, length: int, generator: torch.Generator) -> Tensor:
        """(batch, length) filler: random windows of the text, or random positions."""
        if self.stream is None:
            return torch.randint(self.vocab, (batch, length), generator=generator)
        if length >= len(self.stream):
            raise GatesumError(f"lag {length} is longer than the loaded text ({len(self.stream)} tokens)")
        starts = torch.randint(len(self.stream) - length, (batch, 1), generator=generator)
        return self.stream[starts + torch.arange(length)]  # (B, L)


def synthetic_filler(vocab_size: int) -> Filler:
    """Uniformly random filler in [0, vocab_size)."""
    return Filler("random tokens", vocab_size)


def read_articles(data_dir: Path, split: str, max_articles: int) -> list[str]:
    path = Path(data_dir) / "cnndm" / f"{split}.jsonl.gz"
    if not path.exists():
        raise GatesumError(f"no CNN/DailyMail data at {path}")
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return [json.loads(line)["article"] for _, line in zip(range(max_articles), lines)]


def text_filler(
    data_dir: Path,
    text_pieces: int,
    split: str = "validation",
    max_articles: int = 2000,
    pieces: Tensor | None = None,
) -> Filler:
    """Windows of real news text: the first ``max_articles`` CNN/DailyMail articles of ``split``,
    tokenized by the bundled tokenizer. The ``text_pieces`` most frequent pieces keep their own
    row (or the given ``pieces``, as a trained model has them); every other piece is "rare"."""
    tokenizer = Tokenizer.load(TOKENIZER)
    ids = torch.tensor(
        [i for row in tokenizer.encode_batch(read_articles(data_dir, split, max_articles)) for i in row]
    )
    if pieces is None:
        counts = Counter(ids.tolist())
        pieces = torch.tensor([piece for piece, _ in counts.most_common(text_pieces)])
    if len(pieces) != text_pieces:
        raise GatesumError(f"the text has fewer than {text_pieces} distinct pieces")
    position = torch.full((tokenizer.vocab_size,), text_pieces, dtype=torch.int64)  # rare
    position[pieces] = torch.arange(text_pieces)
    name = f"CNN/DailyMail {split} text, bundled tokenizer, {text_pieces} pieces + rare"
    return Filler(name, text_pieces + 1, position[ids], pieces)


FillerSpec = tuple  # ("synthetic", vocab_size) or ("text", data_dir, text_pieces): picklable


def make_filler(spec: FillerSpec, split: str = "validation", pieces: Tensor | None = None) -> Filler:
    """The filler a spec names (a worker process rebuilds it from the spec); ``split`` and
    ``pieces`` pick the text and the pieces with their own row (a trained model's, for scoring)."""
    if spec[0] == "synthetic":
        return synthetic_filler(spec[1])
    return text_filler(Path(spec[1]), spec[2], split, pieces=pieces)


def recall_batch(
    config: MemoryConfig, filler: Filler, lag: int, batch: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """tokens (B, key_length + lag) in embedding rows, keys (B, key_length). Rows 0…K−1 are the
    key symbols, filler rows follow, so the key appears nowhere but at the start."""
    keys = torch.randint(config.key_symbols, (batch, config.key_length), generator=generator)
    tokens = torch.cat([keys, filler(batch, lag, generator) + config.key_symbols], 1)
    return tokens, keys


def recall_accuracy(logits: Tensor, keys: Tensor) -> tuple[float, float]:
    """(exact-key accuracy, per-symbol accuracy) of logits (B, k, K) against keys (B, k)."""
    correct = logits.argmax(-1) == keys
    return correct.all(-1).float().mean().item(), correct.float().mean().item()


def new_model(
    config: MemoryConfig, filler: Filler, cell: str, init: str, max_lag: int, seed: int
) -> RecallModel:
    """A recall model on ``config.device``, its gates initialized for lags up to ``max_lag``."""
    torch.manual_seed(seed)
    model = RecallModel(config.model_config(cell), filler.pieces).to(config.device)
    # chrono: memory times spread up to the longest lag the task needs (× chrono_span)
    apply_gate_init(
        model.encoder,
        init,
        max_lag=max(2, round(config.chrono_span * max_lag)),
        generator=torch.Generator().manual_seed(seed),
    )
    return model


def train_step(
    model: RecallModel,
    optimizer: torch.optim.Optimizer,
    tokens: Tensor,
    keys: Tensor,
    grad_clip: float,
    every_position: bool = False,
) -> tuple[Tensor, Tensor]:
    """One Adam step on the cross-entropy of the readout at the end, or with ``every_position``
    after every text token, the readout at lag t weighted ∝ 1/t; returns (loss, final logits
    (B, k, K)), detached.

    Why 1/t: every decade of lags (1–10, 10–100, 100–1,000) weighs the same. Uniform weights
    give lags 1–10 a hundredth of the loss of a 1,000-token document, and a plain RNN, which can
    only learn the short lags, then learned nothing at all in 400 steps.
    """
    logits = model(tokens)  # (B, S, k, K)
    K, k = model.config.key_symbols, model.config.key_length
    scored = logits[:, k:] if every_position else logits[:, -1:]  # (B, L, k, K), L lags
    B, L = scored.shape[:2]
    targets = keys.unsqueeze(1).expand(B, L, k)  # (B, L, k)
    losses = F.cross_entropy(scored.reshape(-1, K), targets.reshape(-1), reduction="none").view(B, L, k)
    weights = 1.0 / torch.arange(1, L + 1, device=scored.device, dtype=scored.dtype)  # lag t: 1/t
    loss = (losses.mean((0, 2)) * weights).sum() / weights.sum()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)  # clipping tames the exploding gradients of RNNs
    optimizer.step()
    return loss.detach(), logits[:, -1].detach()


def train_point(config: MemoryConfig, filler: Filler, cell: str, init: str, lag: int, seed: int) -> dict:
    """Train one recall model under the budget, read out from the final state; returns its record.

    The training stream and the held-out batch depend on (lag, seed) only, so every cell and
    init sees the same documents. Each batch is fresh, so the accuracy on a batch before the
    step that trains on it is an unbiased estimate; when it reaches the threshold, the
    held-out batch decides whether the point is solved.
    """
    model = new_model(config, filler, cell, init, config.key_length + lag, seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    stream = torch.Generator().manual_seed(1_000_003 * seed + lag)
    held_out = recall_batch(config, filler, lag, config.eval_size, torch.Generator().manual_seed(-1 - seed))
    held_tokens, held_keys = (tensor.to(config.device) for tensor in held_out)

    def evaluate() -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(chunk)[:, -1] for chunk in held_tokens.split(256)])
        model.train()
        return recall_accuracy(logits, held_keys)

    started, steps_to_solve, stopped_by, last_check = time.perf_counter(), None, "steps", -10
    for step in range(1, config.max_steps + 1):
        tokens, keys = (
            t.to(config.device) for t in recall_batch(config, filler, lag, config.batch_size, stream)
        )
        loss, logits = train_step(model, optimizer, tokens, keys, config.grad_clip, config.every_position)
        batch_accuracy, _ = recall_accuracy(logits, keys)
        if batch_accuracy >= config.solved_accuracy and step - last_check >= 10:
            last_check = step
            if evaluate()[0] >= config.solved_accuracy:
                steps_to_solve, stopped_by = step, "solved"
                break
        if time.perf_counter() - started > config.max_seconds:
            stopped_by = "seconds"
            break
    accuracy, symbol_accuracy = evaluate()
    return {
        "cell": cell,
        "init": init,
        "lag": lag,
        "seed": seed,
        "solved": steps_to_solve is not None,
        "steps_to_solve": steps_to_solve,
        "steps": step,
        "stopped_by": stopped_by,
        "seconds": round(time.perf_counter() - started, 2),
        "accuracy": accuracy,
        "symbol_accuracy": symbol_accuracy,
        "loss": loss.item(),
        "chance": config.key_symbols**-config.key_length,
    }
