"""Bundles written by earlier versions keep loading."""

import torch
from safetensors.torch import save_file

from gatesum.model.bundle import WEIGHTS_FILE, load_bundle, save_bundle
from gatesum.model.config import ModelConfig
from gatesum.model.summarizer import Summarizer
from gatesum.model.text import NormalizerConfig
from gatesum.model.tokenizer import Tokenizer


def test_a_bundle_from_before_w_c_was_named_still_loads(tmp_path):
    """Older bundles call w_c "coverage_weight" and carry λ (coverage_loss_weight) in the model config."""
    texts = [f"the council voted on bridge number {i} ." for i in range(200)]
    tokenizer = Tokenizer.train(texts, tmp_path / "tok" / "tokenizer.model", vocab_size=300)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, embedding_size=8, encoder_hidden_size=8,
                         decoder_hidden_size=16, attention_size=8, coverage=True)  # fmt: skip
    save_bundle(tmp_path / "old", Summarizer(config), tokenizer, NormalizerConfig(), card={"name": "old"})
    weights = {name: p.detach().clone() for name, p in Summarizer(config).named_parameters()}
    weights["decoder.attention.coverage_weight"] = torch.full_like(weights.pop("decoder.attention.w_c"), 0.25)
    save_file(weights, str(tmp_path / "old" / WEIGHTS_FILE))
    card_path = tmp_path / "old" / "config.json"
    card_path.write_text(
        card_path.read_text().replace('"coverage": true,', '"coverage": true, "coverage_loss_weight": 0.0,')
    )
    bundle = load_bundle(tmp_path / "old")
    assert torch.all(bundle.model.decoder.attention.w_c == 0.25)
