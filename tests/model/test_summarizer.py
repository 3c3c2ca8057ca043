"""The summarizer learns, masks padding, survives edge cases, and copies."""

import pytest
import torch

from gatesum.model.config import ModelConfig
from gatesum.model.search import GenerationConfig
from gatesum.model.summarizer import Summarizer

BOS, EOS, PAD = 2, 3, 0


def tiny_config(**overrides) -> ModelConfig:
    values = dict(vocab_size=24, embedding_size=16, encoder_hidden_size=16, decoder_hidden_size=32,
                  attention_size=16, dropout=0.0)  # fmt: skip
    values.update(overrides)
    return ModelConfig(**values)


def make_batch(source_rows, target_rows):
    """Lists of token lists -> padded (source, lengths, target_input, target_output)."""
    S = max(map(len, source_rows))
    source = torch.tensor([row + [PAD] * (S - len(row)) for row in source_rows])
    lengths = torch.tensor([len(row) for row in source_rows])
    T = max(map(len, target_rows)) + 1
    target_input = torch.tensor([[BOS, *row] + [PAD] * (T - 1 - len(row)) for row in target_rows])
    target_output = torch.tensor([[*row, EOS] + [PAD] * (T - 1 - len(row)) for row in target_rows])
    return source, lengths, target_input, target_output


SOURCES = [[5, 9, 11, 7, 8, 13], [6, 10, 12, 4], [14], [15, 16, 17, 18, 19]]
TARGETS = [[9, 11, 7], [12, 10], [14, 14], [19, 15, 17, 16]]


def train(model, batch, steps, lr=0.02):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss, _ = model(*batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return loss.item()


@pytest.mark.slow  # trains or gradchecks for seconds: outside the fast lane
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize(
    "attention,copy",
    [("none", False), ("mlp", False), ("mlp", True)],
    ids=["no-attention", "attention", "copy"],
)
def test_overfits_a_handful_of_pairs(cell, attention, copy):
    torch.manual_seed(0)
    config = tiny_config(encoder_cell=cell, decoder_cell=cell, attention=attention, copy=copy)
    model = Summarizer(config)
    batch = make_batch(SOURCES, TARGETS)
    loss = train(model, batch, steps=120)
    assert loss < 0.05
    model.eval()
    result = model.generate(
        batch[0], batch[1], GenerationConfig(min_length=0, beam_size=1, no_repeat_ngram_size=0)
    )
    assert result.tokens == TARGETS


@pytest.mark.slow  # trains or gradchecks for seconds: outside the fast lane
@pytest.mark.parametrize("attention", ["general", "dot"])
def test_multiplicative_attention_learns(attention):
    torch.manual_seed(0)
    model = Summarizer(tiny_config(attention=attention))
    assert train(model, make_batch(SOURCES, TARGETS), steps=120) < 0.05


@pytest.mark.parametrize("input_feeding", [True, False], ids=["input-feeding", "parallel"])
def test_padding_in_the_source_does_not_change_the_loss(input_feeding):
    torch.manual_seed(0)
    config = tiny_config(coverage=True, input_feeding=input_feeding)
    model = Summarizer(config).eval()
    source, lengths, target_input, target_output = make_batch(SOURCES, TARGETS)
    loss, _ = model(source, lengths, target_input, target_output, coverage_loss_weight=1.0)
    garbage = source.clone()
    garbage[source == PAD] = 17
    wider = torch.cat([garbage, torch.full((4, 3), 9)], 1)
    loss_garbage, _ = model(wider, lengths, target_input, target_output, coverage_loss_weight=1.0)
    torch.testing.assert_close(loss, loss_garbage)


def test_edge_cases_give_finite_losses_and_outputs():
    torch.manual_seed(0)
    model = Summarizer(tiny_config(coverage=True))
    one = make_batch([[7]], [[7]])  # batch of 1, source of length 1
    loss, stats = model(*one, coverage_loss_weight=1.0)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    empty_target = (one[0], one[1], torch.tensor([[BOS, PAD]]), torch.tensor([[PAD, PAD]]))
    loss, stats = model(*empty_target, coverage_loss_weight=1.0)
    assert torch.isfinite(loss) and stats["tokens"] == 1
    model.eval()
    for beam in (1, 3):
        out = model.generate(one[0], one[1], GenerationConfig(min_length=0, beam_size=beam, max_length=5))
        assert len(out.tokens) == 1 and len(out.tokens[0]) <= 5


def test_copy_gate_extremes_do_not_give_nan():
    torch.manual_seed(0)
    model = Summarizer(tiny_config())
    batch = make_batch(SOURCES, TARGETS)
    for bias in (-1e4, 1e4):  # p_gen exactly 0, then exactly 1
        with torch.no_grad():
            model.decoder.copy_gate.bias.fill_(bias)
        loss, _ = model(*batch)
        loss.backward()
        assert torch.isfinite(loss)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        model.zero_grad()


def test_bf16_autocast_on_cpu_trains():
    torch.manual_seed(0)
    model = Summarizer(tiny_config())
    batch = make_batch(SOURCES, TARGETS)
    full_precision, _ = model(*batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = model(*batch)
    loss.backward()
    assert loss.dtype == torch.float32  # float32 master weights and loss
    assert abs(loss.item() - full_precision.item()) < 0.05 * full_precision.item()
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_invalid_configs_are_refused():
    with pytest.raises(ValueError, match="need attention"):
        tiny_config(attention="none", copy=True)
    with pytest.raises(ValueError, match="encoder_cell"):
        tiny_config(encoder_cell="transformer")


def copy_task(generator, count, vocab_size, source_length=10, span=(2, 6)):
    """Random sources over the whole vocabulary; the target is the span source[2:6]."""
    sources = torch.randint(4, vocab_size, (count, source_length), generator=generator).tolist()
    return sources, [row[span[0] : span[1]] for row in sources]


@pytest.mark.slow
def test_copy_reproduces_spans_of_fresh_random_tokens():
    """Held-out sources are fresh random draws: the copy model points at the span, while the
    same model without copy must learn to write each of 250 tokens and is far behind."""
    exact = {}
    for copy in (True, False):
        torch.manual_seed(0)
        generator = torch.Generator().manual_seed(0)
        model = Summarizer(tiny_config(vocab_size=256, copy=copy, tie_embeddings=False))
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        for _ in range(150):
            loss, _ = model(*make_batch(*copy_task(generator, 32, 256)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        sources, targets = copy_task(generator, 100, 256)
        batch = make_batch(sources, targets)
        result = model.generate(
            batch[0], batch[1], GenerationConfig(min_length=0, beam_size=1, no_repeat_ngram_size=0)
        )
        exact[copy] = sum(got == want for got, want in zip(result.tokens, targets)) / len(targets)
    assert exact[True] >= 0.8, exact
    assert exact[False] <= exact[True] - 0.5, exact


def test_skipping_the_untrained_coverage_input_is_exact():
    """Before the coverage phase w_c = 0, so the coverage feature may be skipped; after, not."""
    torch.manual_seed(0)
    model = Summarizer(tiny_config(coverage=True)).eval()
    batch = make_batch(SOURCES, TARGETS)
    assert not model.decoder.coverage_in_use()
    _, skipped = model(*batch, coverage_loss_weight=0.0)  # coverage not tracked
    _, tracked = model(*batch, coverage_loss_weight=1e-9)  # coverage tracked, w_c = 0
    assert "coverage_loss" in tracked and "coverage_loss" not in skipped
    assert abs(skipped["nll"] - tracked["nll"]) < 1e-6
    with torch.no_grad():
        model.decoder.attention.w_c.fill_(0.5)
    assert model.decoder.coverage_in_use()
    _, used = model(*batch, coverage_loss_weight=0.0)
    assert abs(used["nll"] - skipped["nll"]) > 1e-4  # a trained w_c now changes the output


def test_additive_attention_computes_bahdanaus_scores():
    """The sigmoid rewrite of v·tanh(W_h h + W_s s + w_c c) gives the textbook weights."""
    from gatesum.model.attention import Attention

    torch.manual_seed(0)
    attention = Attention("mlp", query_size=6, memory_size=5, attention_size=4, coverage=True).double()
    with torch.no_grad():
        attention.w_c.normal_()
    memory, query = torch.randn(2, 7, 5, dtype=torch.double), torch.randn(2, 6, dtype=torch.double)
    coverage = torch.rand(2, 7, dtype=torch.double)
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    weights, context = attention(query, attention.keys(memory), memory, mask, coverage)
    u = (attention.memory_projection(memory) + attention.query_projection(query).unsqueeze(1)
         + coverage.unsqueeze(-1) * attention.w_c)  # fmt: skip
    scores = (torch.tanh(u) @ attention.score_vector.weight.squeeze(0)).masked_fill(~mask, float("-inf"))
    torch.testing.assert_close(weights.double(), torch.softmax(scores, -1), atol=1e-7, rtol=0)
    torch.testing.assert_close(context, torch.bmm(weights.unsqueeze(1).double(), memory).squeeze(1))
