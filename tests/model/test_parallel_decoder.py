"""Without input feeding, training runs the decoder over all target positions at once: the
same distributions, losses and gradients as stepping one token at a time, as inference does."""

import pytest
import torch

from gatesum.model import attention as attention_module
from gatesum.model.config import ModelConfig
from gatesum.model.search import GenerationConfig
from gatesum.model.summarizer import Summarizer
from tests.model.test_summarizer import SOURCES, TARGETS, make_batch, tiny_config

# padding in the source (lengths 6, 4, 1, 5) and in the target (lengths 4, 3, 3, 5 with EOS)
BATCH = make_batch(SOURCES, TARGETS)
COVERAGE = {"off": None, "inert": 0.0, "trained": 0.7}  # coverage tracked or not, and w_c


@pytest.fixture(autouse=True)
def small_score_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Additive scores in chunks of 2 positions (T = 5): the chunked path, with a ragged end."""
    B, S = BATCH[0].shape
    monkeypatch.setattr(attention_module, "ADDITIVE_CHUNK_ELEMENTS", 2 * B * S * 16)


def parallel_model(**overrides) -> Summarizer:
    torch.manual_seed(0)
    model = Summarizer(tiny_config(input_feeding=False, coverage=True, **overrides)).eval()
    with torch.no_grad():  # a trained-looking model: untrained biases hide mistakes in the copy term
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return model


def set_coverage_weight(model: Summarizer, value: float) -> None:
    with torch.no_grad():
        model.decoder.attention.w_c.fill_(value)


def log_probs_both_ways(
    model: Summarizer, track_coverage: bool, keys_given: bool = True
) -> tuple[torch.Tensor, ...]:
    """(B, T, V) log-probabilities of the parallel forward and of ``step`` after ``step``,
    and the coverage before each position of both. Without ``keys_given`` the parallel forward
    gets no keys, as in training (general attention then projects the queries instead)."""
    source, lengths, target_input, _ = BATCH
    decoder = model.decoder
    encoded = model.encoder(source, lengths)
    state = decoder.initial_state(encoded, model.bridge(encoded), track_coverage)
    keys = decoder.keys(encoded)
    parallel = decoder(target_input, state, encoded, keys if keys_given else None)
    stepped, coverages = [], []
    for token in target_input.unbind(1):
        output, state = decoder.step(token, state, encoded, keys)
        stepped.append(decoder.log_probs(output, source))
        coverages.append(output.coverage)
    coverage = torch.stack(coverages, 1) if track_coverage else None
    return decoder.log_probs(parallel, source), torch.stack(stepped, 1), parallel.coverage, coverage


@pytest.mark.parametrize("keys", ["given", "left"])
@pytest.mark.parametrize("grad", [False, True], ids=["no-grad", "grad"])
@pytest.mark.parametrize("coverage", list(COVERAGE))
@pytest.mark.parametrize("copy", [True, False], ids=["copy", "no-copy"])
@pytest.mark.parametrize("attention", ["mlp", "general", "dot"])
def test_parallel_forward_gives_the_distributions_of_stepping(attention, copy, coverage, grad, keys):
    model = parallel_model(attention=attention, copy=copy)  # tiny: encoder 2 × 16 = decoder 32, dot fits
    set_coverage_weight(model, COVERAGE[coverage] or 0.0)
    with torch.set_grad_enabled(grad):
        parallel, stepped, parallel_coverage, stepped_coverage = log_probs_both_ways(
            model, track_coverage=coverage != "off", keys_given=keys == "given"
        )
    assert parallel.shape == (4, 5, 24)
    torch.testing.assert_close(parallel, stepped, atol=1e-5, rtol=0)
    assert parallel.exp().sum(-1).sub(1).abs().max() < 1e-5  # distributions over the vocabulary
    if coverage == "off":
        assert parallel_coverage is None
    else:
        torch.testing.assert_close(parallel_coverage, stepped_coverage, atol=1e-5, rtol=0)
        assert parallel_coverage[:, -1].sum(-1).sub(4).abs().max() < 1e-5  # four weight rows summed


@pytest.mark.parametrize("cell,layers", [("lstm", 2), ("gru", 1)])
def test_parallel_forward_of_other_decoders_matches_stepping(cell, layers):
    """Two LSTM layers (the fused loop layer by layer) and a GRU (Recurrent's generic scan)."""
    model = parallel_model(decoder_cell=cell, encoder_cell=cell, decoder_layers=layers)
    parallel, stepped, _, _ = log_probs_both_ways(model, track_coverage=False)
    torch.testing.assert_close(parallel, stepped, atol=1e-5, rtol=0)


def loss_and_gradients(model: Summarizer, weight: float) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad()
    loss, _ = model(*BATCH, coverage_loss_weight=weight)
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(
    "attention,coverage,weight",
    [("mlp", "off", 0.0), ("mlp", "inert", 1.0), ("mlp", "trained", 1.0), ("general", "trained", 1.0)],
    ids=["no-coverage", "coverage-phase-start", "coverage-phase", "general-coverage-phase"],
)
def test_parallel_training_gives_the_loss_and_gradients_of_stepping(monkeypatch, attention, coverage, weight):
    model = parallel_model(attention=attention, dropout=0.0).train()
    set_coverage_weight(model, COVERAGE[coverage] or 0.0)
    parallel_loss, parallel_grads = loss_and_gradients(model, weight)
    monkeypatch.setattr(model.decoder, "forward", model.decoder.stepped)
    stepped_loss, stepped_grads = loss_and_gradients(model, weight)
    assert abs(parallel_loss - stepped_loss) < 1e-5
    assert parallel_grads.keys() == stepped_grads.keys()
    for name, gradient in parallel_grads.items():
        torch.testing.assert_close(gradient, stepped_grads[name], atol=1e-5, rtol=1e-4, msg=name)
    if weight > 0:  # w_c learns from its very first coverage step, while it is still 0
        assert parallel_grads["decoder.attention.w_c"].abs().max() > 1e-4


@pytest.mark.slow  # trains or gradchecks for seconds: outside the fast lane
def test_parallel_decoder_learns_and_generates():
    torch.manual_seed(0)
    model = Summarizer(tiny_config(input_feeding=False))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(120):
        loss, _ = model(*BATCH)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
    result = model.eval().generate(
        BATCH[0], BATCH[1], GenerationConfig(min_length=0, beam_size=2, no_repeat_ngram_size=0)
    )
    assert result.tokens == TARGETS


def test_bundles_without_the_field_keep_input_feeding():
    """A config saved before ``input_feeding`` existed loads as the decoder it was trained with."""
    saved = tiny_config().to_dict()
    del saved["input_feeding"]
    config = ModelConfig.from_dict(saved)
    assert config.input_feeding
    names = set(Summarizer(config).state_dict())
    assert "decoder.cells.0.weight_ih" in names and not any(
        ".recurrent.cells" in n for n in names if "decoder" in n
    )
    parallel = Summarizer(tiny_config(input_feeding=False)).decoder
    assert parallel.recurrent.fused  # plain LSTM: the compiled loops the encoder uses
    assert parallel.layer_cells[0].weight_ih.shape[1] == 16  # reads emb(y_{t−1}) only, E = 16
