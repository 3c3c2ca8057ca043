"""CUDA: the paths a GPU training run takes. These run only where a CUDA device is; CI and the
development machine have none, so here they skip (README: "Tests")."""

from pathlib import Path

import pytest
import torch

from gatesum.model.config import ModelConfig
from gatesum.model.recurrent import Recurrent
from gatesum.model.search import GenerationConfig
from gatesum.model.summarizer import Summarizer
from tests.helpers import write_pairs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_recurrent_on_cuda_matches_the_cpu(kind):
    """On CUDA the fused LSTM runs its torch-ops loops (the compiled ones are CPU code)."""
    torch.manual_seed(0)
    layer = Recurrent(kind, 5, 8, num_layers=2, bidirectional=True)
    x, lengths = torch.randn(3, 11, 5), torch.tensor([11, 4, 1])
    want, _ = layer(x, lengths)
    want.sum().backward()
    want_grads = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    got, _ = layer.cuda()(x.cuda(), lengths.cuda())
    got.sum().backward()
    torch.testing.assert_close(got.cpu(), want, atol=1e-4, rtol=1e-4)
    for got_grad, want_grad in zip((p.grad.cpu() for p in layer.parameters()), want_grads, strict=True):
        torch.testing.assert_close(got_grad, want_grad, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("input_feeding", [True, False], ids=["input-feeding", "parallel"])
def test_a_bf16_autocast_training_step_and_generation_on_cuda(input_feeding):
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=64, embedding_size=16, encoder_hidden_size=16, decoder_hidden_size=32,
                         attention_size=16, coverage=True, input_feeding=input_feeding)  # fmt: skip
    model = Summarizer(config).cuda()
    source = torch.randint(4, 64, (4, 20), device="cuda")
    lengths = torch.tensor([20, 15, 9, 3], device="cuda")
    target = torch.randint(4, 64, (4, 8), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss, _ = model(source, lengths, target, target, coverage_loss_weight=1.0)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    output = model.generate(source, lengths, GenerationConfig(beam_size=2, max_length=6))
    assert len(output.tokens) == 4


def test_gatesum_train_runs_on_cuda(gatesum, tmp_path: Path):
    data = write_pairs(tmp_path / "pairs.jsonl", 60)
    output = tmp_path / "run"
    result = gatesum("train", "--data-files", str(data), "--output-dir", str(output), "--device", "cuda",
                     "--max-steps", "4", "--validation-size", "6", "--tokenizer-vocab-size", "300",
                     "--batch-tokens", "400", "--eval-every", "1000", "--eval-rouge-samples", "4",
                     "--model", "embedding_size=16", "--model", "encoder_hidden_size=16",
                     "--model", "decoder_hidden_size=32", "--model", "attention_size=16")  # fmt: skip
    assert result.code == 0, result.err
    assert (output / "checkpoint").is_dir()
