"""``ModelConfig``: every architectural choice of a summarizer, saved with each model."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from gatesum.model.attention import KINDS as ATTENTION_KINDS
from gatesum.model.cells import CELLS

# Keys older bundles carry that are no longer model settings: skipped when loading.
# coverage_loss_weight (λ) is a training setting (``TrainConfig.coverage_loss_weight``).
RETIRED_KEYS = frozenset({"coverage_loss_weight"})


@dataclass
class ModelConfig:
    vocab_size: int = 16000
    embedding_size: int = 128
    encoder_cell: str = "lstm"  # rnn | gru | lstm
    encoder_hidden_size: int = 256  # per direction
    encoder_layers: int = 1
    bidirectional: bool = True
    decoder_cell: str = "lstm"
    decoder_hidden_size: int = 256
    decoder_layers: int = 1
    # Feed ~s_{t−1} into step t (Luong et al. 2015). False: the decoder LSTM reads emb(y_{t−1})
    # only, so teacher-forced training runs it over all target positions at once (Decoder docs).
    input_feeding: bool = True
    attention: str = "mlp"  # mlp (Bahdanau, additive) | general (bilinear) | dot (Luong) | none
    attention_size: int = 256  # mlp only
    copy: bool = True  # pointer-generator (See et al. 2017); needs attention
    coverage: bool = False  # coverage input to attention (See et al. 2017); needs attention
    tie_embeddings: bool = True  # output projection shares the embedding matrix
    dropout: float = 0.1
    peephole: bool = False  # LSTM cells feed C into their gates
    gate_init: str = "default"  # default | chrono (see model/init.py)
    gate_init_max_lag: int = 400
    pad_id: int = 0
    unk_id: int = 1
    bos_id: int = 2
    eos_id: int = 3
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes, never read by the model

    def __post_init__(self) -> None:
        for name in ("encoder_cell", "decoder_cell"):
            if getattr(self, name) not in CELLS:
                raise ValueError(f"{name} must be one of {sorted(CELLS)}, not {getattr(self, name)!r}")
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS}, not {self.attention!r}")
        if self.attention == "none" and (self.copy or self.coverage):
            raise ValueError("copy and coverage read the attention weights: they need attention")
        if self.attention == "dot" and self.encoder_output_size != self.decoder_hidden_size:
            raise ValueError("dot attention needs encoder output size == decoder_hidden_size")

    @property
    def encoder_output_size(self) -> int:
        return self.encoder_hidden_size * (2 if self.bidirectional else 1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """Builds the config, refusing unknown keys (a sign of a bundle from another version)."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {key: value for key, value in values.items() if key not in RETIRED_KEYS}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {unknown}")
        return cls(**values)
