"""Greedy and beam search: constraints hold, beam 1 is greedy, batches don't interact."""

from dataclasses import FrozenInstanceError, replace

import pytest
import torch

from gatesum.model.bundle import load_bundle
from gatesum.model.pipeline import encode_sources, summarize_ids, summarize_texts
from gatesum.model.search import (
    GENERATION_SETTINGS,
    GenerationConfig,
    banned_ngram_tokens,
    beam_search,
    greedy_search,
)
from gatesum.model.summarizer import Summarizer
from tests.model.test_summarizer import tiny_config

BOS, EOS, PAD, V = 2, 3, 0, 12
CPU = torch.device("cpu")


def scripted_step(preferences):
    """A fake model: at every step, log-probs favour tokens in the order of ``preferences``."""
    scores = torch.full((V,), -20.0)
    for rank, token in enumerate(preferences):
        scores[token] = -float(rank)
    log_probs = torch.log_softmax(scores, 0)

    def step(tokens, state):
        return log_probs.expand(tokens.shape[0], V).clone(), None, state

    return step


def random_step(seed):
    """A fake model whose next-token distribution depends on the previous token."""
    logits = torch.randn(V, V, generator=torch.Generator().manual_seed(seed)) * 3
    logits[:, EOS] -= 30.0  # long enough outputs to test something
    table = torch.log_softmax(logits, -1)

    def step(tokens, state):
        return table[tokens], None, state

    return step


def reorder(state, rows):
    return state


def test_min_length_is_respected():
    config = GenerationConfig(beam_size=1, min_length=5, max_length=20, no_repeat_ngram_size=0)
    result = greedy_search(scripted_step([EOS, 7]), None, 3, config, BOS, EOS, PAD, CPU)
    assert result.tokens == [[7] * 5] * 3
    config = replace(config, beam_size=3)
    result = beam_search(scripted_step([EOS, 7, 8]), reorder, None, 2, config, BOS, EOS, PAD, CPU)
    assert all(len(tokens) >= 5 for tokens in result.tokens)


def test_ngram_blocking_never_repeats_an_ngram():
    for n in (2, 3):
        for beam in (1, 4):
            config = GenerationConfig(min_length=0, beam_size=beam, max_length=30, no_repeat_ngram_size=n)
            search = greedy_search if beam == 1 else beam_search
            args = (random_step(n),) if beam == 1 else (random_step(n), reorder)
            tokens = search(*args, None, 4, config, BOS, EOS, PAD, CPU).tokens
            for row in tokens:
                ngrams = [tuple(row[i : i + n]) for i in range(len(row) - n + 1)]
                assert len(ngrams) == len(set(ngrams)), (n, beam, row)
            assert any(len(row) > 2 * n for row in tokens)  # the test exercised something


def test_banned_ngram_tokens():
    banned = banned_ngram_tokens(torch.tensor([[5, 6, 7, 5, 6]]), 3, V)
    assert banned[0].nonzero().flatten().tolist() == [7]


def test_beam_one_equals_greedy():
    for seed in range(5):
        config = GenerationConfig(beam_size=1, max_length=15, no_repeat_ngram_size=2, min_length=3)
        greedy = greedy_search(random_step(seed), None, 3, config, BOS, EOS, PAD, CPU)
        beam = beam_search(random_step(seed), reorder, None, 3, config, BOS, EOS, PAD, CPU)
        assert beam.tokens == greedy.tokens


def test_beam_finds_a_better_sequence_than_greedy():
    # Step 1: token 5 looks best (−0.5) but leads to a flat distribution; token 6 (−1.0) leads to EOS.
    def step(tokens, state):
        log_probs = torch.full((tokens.shape[0], V), -30.0)
        first = tokens == BOS
        log_probs[first, 5], log_probs[first, 6] = -0.5, -1.0
        log_probs[tokens == 5] = torch.log(torch.full((V,), 1.0 / V))
        log_probs[tokens == 6, EOS] = 0.0
        return log_probs, None, state

    config = GenerationConfig(
        min_length=0, beam_size=2, max_length=4, no_repeat_ngram_size=0, length_penalty=0.0
    )
    greedy = greedy_search(step, None, 1, config, BOS, EOS, PAD, CPU)
    beam = beam_search(step, reorder, None, 1, config, BOS, EOS, PAD, CPU)
    assert greedy.tokens[0][0] == 5
    assert beam.tokens == [[6]]
    assert beam.scores[0] > greedy.scores[0]


def test_model_batch_invariance():
    """A padded batch gives the same summaries as each source alone."""
    torch.manual_seed(0)
    model = Summarizer(tiny_config(vocab_size=40, coverage=True)).eval()
    rows = [[5, 9, 11, 7, 8, 13, 20, 21], [6, 10, 12], [14], [15, 16, 17, 18, 19]]
    source = torch.tensor([row + [PAD] * (8 - len(row)) for row in rows])
    lengths = torch.tensor([len(row) for row in rows])
    for beam in (1, 4):
        config = GenerationConfig(beam_size=beam, max_length=12, min_length=2, coverage_penalty=0.5)
        batched = model.generate(source, lengths, config, return_attention=True)
        for i, row in enumerate(rows):
            alone = model.generate(torch.tensor([row]), torch.tensor([len(row)]), config)
            assert batched.tokens[i] == alone.tokens[0]
            assert abs(batched.scores[i] - alone.scores[0]) < 1e-4
            attention = batched.attention[i]
            assert attention.shape == (min(len(batched.tokens[i]) + 1, config.max_length), 8)
            torch.testing.assert_close(attention.sum(-1), torch.ones(attention.shape[0]))
            assert torch.all(attention[:, len(row) :] == 0)  # never attends to padding


def test_a_summary_is_never_longer_than_its_source():
    """Rows of one batch stop at their own source's length, however much the model wants to go on."""
    for beam in (1, 3):
        search = greedy_search if beam == 1 else beam_search
        args = (random_step(beam),) if beam == 1 else (random_step(beam), reorder)
        config = GenerationConfig(min_length=0, beam_size=beam, max_length=20, no_repeat_ngram_size=0)
        uncapped = search(*args, None, 4, config, BOS, EOS, PAD, CPU).tokens
        assert [len(row) for row in uncapped] == [20] * 4  # EOS is never the model's choice
        alone = search(*args, None, 1, config.for_sources([5]), BOS, EOS, PAD, CPU).tokens
        assert [len(row) for row in alone] == [5]
        mixed = search(*args, None, 4, config.for_sources([5, 2, 9, 30]), BOS, EOS, PAD, CPU).tokens
        assert [len(row) for row in mixed] == [5, 2, 9, 20]  # a cap above max_length changes nothing
        if beam == 1:  # greedy stops where it would have gone on; a beam may choose another path
            assert mixed == [row[: len(capped)] for row, capped in zip(uncapped, mixed)]


def test_min_length_above_half_the_source_is_lowered_to_it():
    for beam in (1, 3):
        search = greedy_search if beam == 1 else beam_search
        args = (scripted_step([EOS, 7, 8, 9]),) if beam == 1 else (scripted_step([EOS, 7, 8, 9]), reorder)
        config = GenerationConfig(beam_size=beam, min_length=8, max_length=20, no_repeat_ngram_size=0)
        tokens = search(*args, None, 3, config.for_sources([3, 12, 20]), BOS, EOS, PAD, CPU).tokens
        # min(8, half the source): EOS, the favourite, as soon as allowed
        assert [len(row) for row in tokens] == [1, 6, 8]


def test_source_lengths_must_match_the_batch():
    config = GenerationConfig(min_length=0, beam_size=1).for_sources([4, 4])
    with pytest.raises(ValueError, match="2 source_lengths for a batch of 3"):
        greedy_search(random_step(0), None, 3, config, BOS, EOS, PAD, CPU)
    with pytest.raises(ValueError):
        GenerationConfig(min_length=0, source_lengths=(3, -1))


def test_model_summaries_are_capped_row_by_row_in_a_padded_batch():
    torch.manual_seed(0)
    model = Summarizer(tiny_config(vocab_size=40)).eval()
    rows = [[5, 9, 11, 7, 8, 13, 20, 21], [6, 10, 12], [14], [15, 16, 17, 18, 19]]
    source = torch.tensor([row + [PAD] * (8 - len(row)) for row in rows])
    lengths = [len(row) for row in rows]
    for beam in (1, 4):
        config = GenerationConfig(beam_size=beam, max_length=12, min_length=10).for_sources(lengths)
        batched = model.generate(source, torch.tensor(lengths), config)
        assert [len(tokens) for tokens in batched.tokens] == [8, 3, 1, 5]  # min_length 10 lowered to each
        for i, row in enumerate(rows):
            alone = model.generate(
                torch.tensor([row]), torch.tensor([len(row)]), replace(config, source_lengths=(len(row),))
            )
            assert batched.tokens[i] == alone.tokens[0]


def test_every_entry_point_caps_by_the_source(tiny_bundle):
    """summarize_texts (API, CLI and eval all call it): no summary has more tokens than its source."""
    bundle = load_bundle(tiny_bundle)
    texts = [
        "Police said the storm hit.",
        "The court found the report.",
        "School won.",
        " ".join(["City team won."] * 20),
    ]
    sources, _ = encode_sources(bundle, texts)
    for beam in (1, 3):
        config = GenerationConfig(beam_size=beam, max_length=60, min_length=60)
        summaries = summarize_texts(bundle, texts, config, batch_size=4)
        assert [len(summary.token_ids) for summary in summaries] == [min(len(ids), 60) for ids in sources]
    assert min(map(len, sources)) <= 6 and max(map(len, sources)) > 60  # short ones and a long one


# --- the generation settings: one frozen config, its bounds in one place --------------------------


def test_generation_config_is_frozen_hashable_and_bounded():
    config = GenerationConfig(min_length=0, beam_size=2, length_penalty=1)
    with pytest.raises(FrozenInstanceError):
        config.beam_size = 3  # type: ignore[misc]
    assert config == GenerationConfig(min_length=0, beam_size=2) and hash(config) == hash(
        GenerationConfig(min_length=0, beam_size=2)
    )
    assert config.length_penalty == 1.0 and isinstance(config.length_penalty, float)
    assert len({GenerationConfig(), GenerationConfig(), config}) == 2  # usable as a dict key
    assert [setting.name for setting in GENERATION_SETTINGS] == [
        "beam_size", "max_length", "min_length", "length_penalty", "no_repeat_ngram_size", "coverage_penalty",
        "copy_mask_threshold", "lead_share", "extract_sentences",
    ]  # fmt: skip
    bounds = {setting.name: (setting.minimum, setting.maximum) for setting in GENERATION_SETTINGS}
    assert bounds == {"beam_size": (1, 16), "max_length": (1, 256), "min_length": (0, 256),
                      "length_penalty": (0.0, 5.0), "no_repeat_ngram_size": (0, 16),
                      "coverage_penalty": (0.0, 5.0), "copy_mask_threshold": (0.0, 1.0),
                      "lead_share": (0.0, 1.0), "extract_sentences": (1, 20)}  # fmt: skip
    for setting in GENERATION_SETTINGS:
        assert getattr(GenerationConfig(), setting.name) == setting.default
        GenerationConfig(**{setting.name: setting.minimum})  # both bounds are allowed
        GenerationConfig(**{setting.name: setting.maximum})
        step = 1 if setting.kind is int else 0.5
        for value in (setting.minimum - step, setting.maximum + step):
            with pytest.raises(ValueError, match=f"^{setting.name} must be between "):
                GenerationConfig(**{setting.name: value})
        for value in (True, "4", None):
            with pytest.raises(ValueError, match=f"^{setting.name} must be a"):
                GenerationConfig(**{setting.name: value})
    with pytest.raises(ValueError, match="beam_size must be a whole number"):
        GenerationConfig(min_length=0, beam_size=2.0)


ATTENDS = {BOS: 0, 5: 1, 6: 1, 7: 2, EOS: 0, PAD: 0}  # input token -> the source position read


def two_path_step(a_reads: int):
    """A fake model with two paths: A (5) then EOS, log-prob −0.5; B (6) C (7) EOS, −0.6. Each
    step attends one-hot to ``ATTENDS[input]``; after A it reads position ``a_reads``."""
    log_probs = torch.full((V, V), -20.0)
    log_probs[BOS, 5], log_probs[BOS, 6] = -0.5, -0.6
    log_probs[5, EOS], log_probs[6, 7], log_probs[7, EOS] = 0.0, 0.0, 0.0
    attends = {**ATTENDS, 5: a_reads}
    attention = torch.zeros(V, 3)
    for token, position in attends.items():
        attention[token, position] = 1.0

    def step(tokens, state):
        return log_probs[tokens], attention[tokens], state

    return step


def test_coverage_penalty_ranks_down_a_beam_that_rereads_the_source():
    """A re-reads position 0 (coverage [2, 0, 0]: 1 over); B C reads each position once."""
    for beta, expected in ((0.0, [5]), (0.4, [6, 7])):  # −0.5 − 0.4·1 = −0.9 < −0.6
        config = GenerationConfig(
            min_length=0, beam_size=2, length_penalty=0.0, no_repeat_ngram_size=0, coverage_penalty=beta
        )
        result = beam_search(two_path_step(a_reads=0), reorder, None, 1, config, BOS, EOS, PAD, CPU)
        assert result.tokens == [expected], beta
        assert result.scores[0] == pytest.approx(-0.5 if expected == [5] else -0.6)


def test_coverage_penalty_does_not_count_a_finished_beams_padding():
    """A (coverage [1, 1, 0]) ends a step before B C; the step after its EOS (fed EOS, giving PAD)
    reads position 0 again, which would put it 1 over, and below B C, if it counted."""
    config = GenerationConfig(
        min_length=0, beam_size=2, length_penalty=0.0, no_repeat_ngram_size=0, coverage_penalty=1.0
    )
    result = beam_search(two_path_step(a_reads=1), reorder, None, 1, config, BOS, EOS, PAD, CPU)
    assert result.tokens == [[5]] and result.scores[0] == pytest.approx(-0.5)


def test_summarize_ids_is_the_search_of_summarize_texts(tiny_bundle):
    """Training's validation decodes ids through the pipeline: the same summaries, in input order."""
    bundle = load_bundle(tiny_bundle)
    texts = [" ".join(["City team won."] * 6), "Police said the storm hit.", "School won."]
    sources, _ = encode_sources(bundle, texts)
    config = GenerationConfig(min_length=0, beam_size=1, max_length=8)
    from_texts = [summary.token_ids for summary in summarize_texts(bundle, texts, config, batch_size=2)]
    assert summarize_ids(bundle.model, sources, config, batch_size=2) == from_texts
    assert all(len(ids) <= min(len(source), 8) for ids, source in zip(from_texts, sources))


def run_joining(bundle, texts, configs, explain=False, cancel=None):
    """Decode ``texts`` through one RunningBatch, text i (with ``configs[i]``) joining at step 2·i,
    the text ``cancel`` dropped at step 3; returns {index: Decoded}."""
    from gatesum.model.running import RunningBatch

    sources, _ = encode_sources(bundle, texts)
    batch = RunningBatch(bundle.model)
    decoded, step = {}, 0
    while step < 2 * len(texts) or batch.rows:
        if step % 2 == 0 and step // 2 < len(texts):
            batch.admit([sources[step // 2]], configs[step // 2], [step // 2], explain)
        if step == 3 and cancel is not None:
            batch.cancel({cancel})
        decoded.update((item.handle, item) for item in batch.step())
        step += 1
    return decoded


def with_attention(bundle, kind: str):
    """The bundle with a fresh summarizer of this attention kind, coverage feeding the scores:
    the shipped model's layout (general attention, no input feeding) or the tiny one's (mlp)."""
    if kind == "mlp":
        return bundle
    torch.manual_seed(1)
    config = replace(bundle.model.config, attention=kind, input_feeding=False, coverage=True)
    model = Summarizer(config).eval()
    with torch.no_grad():
        model.decoder.attention.w_c.fill_(0.5)
    return replace(bundle, model=model)


@pytest.mark.parametrize("kind", ["mlp", "general"])
def test_continuous_batching_gives_the_summaries_of_summarize_texts(tiny_bundle, kind):
    """Texts joining a running batch at different steps, beside other settings, decode to the
    same tokens as summarize_texts gives them (greedy, beam, β, n-gram blocking, explain): rows
    of beams 1, 4 and 3 share their examples' memory in one grid, slots freed and reused."""
    bundle = with_attention(load_bundle(tiny_bundle), kind)
    texts = [" ".join(["City team won the match."] * n) + f" Story {n}." for n in (1, 6, 2, 12, 3, 30)]
    settings = [
        GenerationConfig(min_length=0, beam_size=1, max_length=12, no_repeat_ngram_size=2),
        GenerationConfig(beam_size=4, max_length=10, min_length=6),
        GenerationConfig(min_length=0, beam_size=3, max_length=9, coverage_penalty=0.5, length_penalty=0.5),
    ]
    configs = [settings[i % 3] for i in range(len(texts))]
    for explain in (False, True):
        decoded = run_joining(bundle, texts, configs, explain)
        for i, text in enumerate(texts):
            [want] = summarize_texts(bundle, [text], configs[i], explain=explain)
            assert decoded[i].tokens == want.token_ids, (i, explain)
            if explain:
                length = len(want.source_ids)
                torch.testing.assert_close(decoded[i].attention[:, :length], want.attention)


@pytest.mark.parametrize("kind", ["mlp", "general"])
def test_a_cancelled_example_leaves_the_others_untouched(tiny_bundle, kind):
    bundle = with_attention(load_bundle(tiny_bundle), kind)
    texts = [" ".join(["Police said the storm hit the coast."] * n) for n in (3, 5, 2, 8)]
    configs = [GenerationConfig(min_length=0, beam_size=2, max_length=10)] * len(texts)
    decoded = run_joining(bundle, texts, configs, cancel=1)
    assert sorted(decoded) == [0, 2, 3]
    for i in (0, 2, 3):
        [want] = summarize_texts(bundle, [texts[i]], configs[i])
        assert decoded[i].tokens == want.token_ids


def test_beam_keeps_the_best_of_all_k_times_v_extensions():
    """The beam ranks each hypothesis's K best tokens only (K·K per example): it must keep what
    ranking every one of the K·V extensions keeps, finished hypotheses (PAD at no cost) included."""
    from gatesum.model.search import NEG_INF, Search, length_penalty

    E, K, vocab = 3, 4, 50
    config = GenerationConfig(
        min_length=0, beam_size=K, max_length=20, no_repeat_ngram_size=0, length_penalty=0.7
    )
    search = Search(config, BOS, EOS, PAD, CPU)
    search.add(E)
    generator = torch.Generator().manual_seed(0)
    finished_seen = 0
    for _ in range(12):
        N = search.rows
        log_probs = torch.log_softmax(torch.randn(N, vocab, generator=generator) * 2, -1)
        log_probs[:, (PAD, BOS)] = NEG_INF  # what the constraints do first (min_length 0: EOS stays)
        # the definition: the K best of the K·V extensions of each example
        extended = log_probs.clone()
        finished = search.finished.view(N)
        extended[finished] = NEG_INF
        extended[finished, PAD] = 0.0
        candidates = search.scores.view(N, 1) + extended
        lengths = (search.lengths + (~search.finished).long()).view(N, 1)
        ranked = candidates / length_penalty(lengths, config.length_penalty)
        _, best = ranked.view(E, K * vocab).topk(K, dim=1)
        expected_rows = (torch.arange(E).unsqueeze(1) * K + best // vocab).view(N)
        expected_tokens = (best % vocab).view(N)
        finished_seen += int(finished.sum())

        rows = search.advance(log_probs, None)
        assert torch.equal(rows, expected_rows)
        assert torch.equal(search.last, expected_tokens)
        assert torch.equal(search.scores, candidates.view(E, K * vocab).gather(1, best))
    assert finished_seen > 0  # the PAD continuation of finished hypotheses was exercised
