"""Recall models: does a cell's state still name the key planted at the start of a document?

A recall model reads a key (``key_length`` symbols out of ``key_symbols``) followed by text,
with one of our recurrent layers, and a linear readout names the key from the hidden state at
each position. There is no attention: the state is all the model has, so the probability of
the right key after t tokens of text is what the cell remembered across a lag of t.

Embedding rows (one table for keys and text):

    0 … K−1          the key symbols (they occur nowhere else)
    K … K+N−1        the N most frequent pieces of the tokenizer on the training text
    K+N              every other piece ("rare")

so a model embeds any id of its tokenizer (the bundled summarizer's sentencepiece model)
with a few thousand numbers instead of a row per piece. ``text_rows`` maps tokenizer ids to
rows; ``recall_curve`` gives the probability of the key at every position in one pass.

Shipped models (``gatesum memory ship``) live in ``gatesum/pretrained/memory``: for each
name, ``NAME.json`` (config, tokenizer fingerprint, the facts of the card) and
``NAME.safetensors`` (weights, float32). Raw text is normalized and tokenized as the
summarizer does it: ``bundle.tokenizer.encode(normalize(text, bundle.normalizer))``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import Tensor, nn

from gatesum.model.bundle import write_atomically
from gatesum.model.errors import GatesumError
from gatesum.model.memory import memory_trace
from gatesum.model.recurrent import Recurrent
from gatesum.model.tokenizer import Tokenizer

FORMAT = "gatesum-recall"
SHIPPED_RECALL_MODELS = Path(str(resources.files("gatesum.pretrained") / "memory"))
CELL_NAMES = ("rnn", "gru", "lstm", "lstm-peephole")  # the peephole LSTM: the extended form


@dataclass(frozen=True)
class RecallConfig:
    """Every architectural choice of a recall model."""

    cell: str = "lstm"  # one of CELL_NAMES
    vocab_size: int = 16000  # ids the tokenizer gives (text_rows maps each to a row)
    text_pieces: int = 512  # N: pieces with their own embedding row
    key_symbols: int = 8  # K
    key_length: int = 1
    embedding_size: int = 16
    hidden_size: int = 32

    @property
    def rows(self) -> int:
        """Embedding rows: K keys, N pieces, one rare row."""
        return self.key_symbols + self.text_pieces + 1

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RecallConfig:
        known = {field.name for field in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown recall model settings {sorted(unknown)}")
        return cls(**values)


class RecallModel(nn.Module):
    """Embedding + ``Recurrent`` encoder + a linear readout of the hidden state at each position.

    forward(tokens (B, S) embedding rows) -> logits (B, S, key_length, key_symbols): the readout
    at position s sees the state after tokens 0…s only. No attention.
    """

    def __init__(self, config: RecallConfig, pieces: Tensor | None = None) -> None:
        super().__init__()
        if config.cell not in CELL_NAMES:
            raise ValueError(f"cell must be one of {CELL_NAMES}, not {config.cell!r}")
        self.config = config
        kind, peephole = config.cell.removesuffix("-peephole"), config.cell.endswith("-peephole")
        options = {"peephole": True} if peephole else {}
        self.embedding = nn.Embedding(config.rows, config.embedding_size)
        self.encoder = Recurrent(kind, config.embedding_size, config.hidden_size, **options)
        # The compiled LSTM loops (model/csrc/lstm.cpp) return NaN once |C_t| > 44 (tanh via a
        # fast-math exp that overflows); recall models grow |C_t| that large over long documents.
        self.encoder.fused = False
        self.readout = nn.Linear(config.hidden_size, config.key_length * config.key_symbols)
        # pieces (N,): the tokenizer ids with their own row, most frequent first (saved with the weights)
        if pieces is None:
            pieces = torch.arange(config.text_pieces)
        if pieces.shape != (config.text_pieces,):
            raise ValueError(f"pieces must have shape ({config.text_pieces},), not {tuple(pieces.shape)}")
        self.register_buffer("pieces", pieces.to(torch.int64))
        self.register_buffer("row_of_id", torch.empty(config.vocab_size, dtype=torch.int64), persistent=False)
        self.index_pieces()

    @torch.no_grad()
    def index_pieces(self) -> None:
        """Rebuild the id -> row map from ``pieces`` (after loading them): piece n gets row K + n,
        every other id the rare row."""
        self.row_of_id.fill_(self.config.rows - 1)
        self.row_of_id[self.pieces] = torch.arange(self.config.text_pieces) + self.config.key_symbols

    def text_rows(self, token_ids: Tensor) -> Tensor:
        """Tokenizer ids (any shape) -> embedding rows; ids out of range are an error."""
        if token_ids.numel() and (token_ids.min() < 0 or token_ids.max() >= self.config.vocab_size):
            raise GatesumError(f"token ids must lie in [0, {self.config.vocab_size})")
        return self.row_of_id[token_ids]

    def document(self, key: Tensor, token_ids: Tensor) -> Tensor:
        """key (B, k) symbols and token_ids (B, T) -> tokens (B, k + T): the key, then the text."""
        return torch.cat([key.to(self.row_of_id.device), self.text_rows(token_ids)], 1)

    def forward(self, tokens: Tensor) -> Tensor:
        outputs, _ = self.encoder(self.embedding(tokens))  # (B, S, H): h_s at every position
        B, S, _ = outputs.shape
        return self.readout(outputs).view(B, S, self.config.key_length, self.config.key_symbols)


def _key_tensor(model: RecallModel, key: int | Sequence[int]) -> Tensor:
    key = [key] if isinstance(key, int) else list(key)
    if len(key) != model.config.key_length or not all(0 <= s < model.config.key_symbols for s in key):
        raise GatesumError(
            f"the key must be {model.config.key_length} symbol(s) in [0, {model.config.key_symbols})"
        )
    return torch.tensor([key])  # (1, k)


@torch.no_grad()
def recall_curve(model: RecallModel, token_ids: Sequence[int] | Tensor, key: int | Sequence[int]) -> Tensor:
    """The probability of the right key had the document ended after each token: (T,).

    Entry t reads the state after the key and tokens 0…t (a lag of t + 1). One pass over the
    text, so the time is linear in its length; the readout at t is the same number as a model
    run on that prefix alone would give (the encoder is causal).
    """
    ids = torch.as_tensor(token_ids, dtype=torch.int64).view(1, -1)  # (1, T)
    key_tensor = _key_tensor(model, key)
    was_training = model.training
    model.eval()
    logits = model(model.document(key_tensor, ids))[0, key_tensor.shape[1] :]  # (T, k, K)
    model.train(was_training)
    symbols = key_tensor.view(1, -1, 1).expand(len(logits), -1, 1)  # (T, k, 1)
    log_probabilities = logits.log_softmax(-1).gather(-1, symbols).squeeze(-1)  # (T, k)
    return log_probabilities.sum(-1).exp()  # (T,): the product over the key's symbols


@torch.no_grad()
def recall_trace(model: RecallModel, token_ids: Sequence[int] | Tensor, key: int | Sequence[int]) -> Tensor:
    """The memory trace (``model.memory.memory_trace``) of the key and text: (k + T,), how much
    of what the encoder wrote at each position survives to the end. Linear in T."""
    ids = torch.as_tensor(token_ids, dtype=torch.int64).view(1, -1)
    tokens = model.document(_key_tensor(model, key), ids)
    return memory_trace(model.encoder, model.embedding(tokens))[0]


# --- shipped models: NAME.json + NAME.safetensors ------------------------------------------


@dataclass
class LoadedRecallModel:
    """What ``load_recall_model`` returns."""

    name: str
    model: RecallModel  # eval mode, float32
    card: dict[str, Any]  # the whole NAME.json


def save_recall_model(
    directory: Path, name: str, model: RecallModel, card: dict[str, Any], tokenizer: Tokenizer | None
) -> None:
    """Write NAME.safetensors and NAME.json (weights first: a reader that finds the JSON finds
    the weights it describes)."""
    weights = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    write_atomically(Path(directory) / f"{name}.safetensors", save(weights))
    tokenizer_facts = None
    if tokenizer is not None:
        tokenizer_facts = {"vocab_size": tokenizer.vocab_size, "fingerprint": tokenizer.fingerprint}
    config = {
        **card,
        "format": FORMAT,
        "version": 1,
        "name": name,
        "model": asdict(model.config),
        "tokenizer": tokenizer_facts,
    }
    write_atomically(Path(directory) / f"{name}.json", (json.dumps(config, indent=1) + "\n").encode())


def _load_state(model: RecallModel, path: Path) -> None:
    """Read safetensors into ``model``'s state (weights and the ``pieces`` buffer), naming the
    file when it is missing, corrupt or does not fit the config."""
    try:
        state = load_file(str(path))
    except FileNotFoundError:
        raise GatesumError(f"{path}: missing") from None
    except (SafetensorError, OSError, ValueError) as error:
        raise GatesumError(f"{path}: unreadable weights ({error})") from None
    expected = model.state_dict()
    if set(state) != set(expected):
        raise GatesumError(f"{path}: weights do not fit the config ({sorted(set(state) ^ set(expected))})")
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise GatesumError(
                f"{path}: {key} has shape {tuple(tensor.shape)}, not {tuple(expected[key].shape)}"
            )
    model.load_state_dict(state)
    model.index_pieces()


def load_recall_model(
    directory: str | Path, name: str, tokenizer: Tokenizer | None = None, device: str | torch.device = "cpu"
) -> LoadedRecallModel:
    """Load NAME from ``directory``. With ``tokenizer``, check that the model was trained on its
    ids (same fingerprint). Raises GatesumError naming the file at fault."""
    path = Path(directory) / f"{name}.json"
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
        if card.get("format") != FORMAT:
            raise ValueError(f"format is not {FORMAT!r}")
        config = RecallConfig.from_dict(card["model"])
    except FileNotFoundError:
        raise GatesumError(f"{path}: missing; no recall model {name!r} in {directory}") from None
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise GatesumError(f"{path}: not a recall model card ({error})") from None
    expected = (card.get("tokenizer") or {}).get("fingerprint")
    if tokenizer is not None and expected not in (None, tokenizer.fingerprint):
        raise GatesumError(f"{path}: trained on tokenizer {expected}, not {tokenizer.fingerprint}")
    model = RecallModel(config)
    _load_state(model, Path(directory) / f"{name}.safetensors")
    return LoadedRecallModel(name, model.to(device).eval(), card)


def load_recall_models(
    directory: str | Path = SHIPPED_RECALL_MODELS,
    tokenizer: Tokenizer | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, LoadedRecallModel]:
    """Every recall model in ``directory`` (the shipped ones by default), by name, in CELL_NAMES
    order first."""
    names = sorted(p.stem for p in Path(directory).glob("*.safetensors"))
    names.sort(key=lambda n: CELL_NAMES.index(n) if n in CELL_NAMES else len(CELL_NAMES))
    if not names:
        raise GatesumError(f"no recall models in {directory}")
    return {name: load_recall_model(directory, name, tokenizer, device) for name in names}
