"""The content selector: shapes, padding, sentence tools, and the selector inside a bundle."""

from __future__ import annotations

import itertools
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from gatesum.model.bundle import (
    CONFIG_FILE,
    SELECTOR_WEIGHTS_FILE,
    load_bundle,
    save_bundle,
    save_with_selector,
)
from gatesum.model.errors import GatesumError
from gatesum.model.selector import (
    ContentSelector,
    SelectorConfig,
    encode_sentences,
    extractive_summary,
    select_sentences,
    sentence_scores,
    split_sentences,
    token_probabilities,
    token_probabilities_batch,
)
from gatesum.model.tokenizer import Tokenizer


def tiny_selector(cell: str = "lstm", bidirectional: bool = True, vocab_size: int = 50) -> ContentSelector:
    torch.manual_seed(0)
    config = SelectorConfig(vocab_size=vocab_size, embedding_size=8, cell=cell, hidden_size=6,
                            num_layers=2, bidirectional=bidirectional)  # fmt: skip
    return ContentSelector(config).eval()


def test_forward_shapes_padding_and_loss():
    selector = tiny_selector()
    source = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    lengths = torch.tensor([4, 2])
    labels = torch.tensor([[1, 0, 1, 0], [0, 1, 1, 1]])  # labels at padding must not count
    output = selector(source, lengths, labels)
    assert output.logits.shape == (2, 4)
    assert output.mask.tolist() == [[True] * 4, [True, True, False, False]]
    assert torch.isneginf(output.logits[1, 2:]).all() and torch.isfinite(output.logits[output.mask]).all()
    real = torch.nn.functional.binary_cross_entropy_with_logits(
        output.logits[output.mask], labels[output.mask].float()
    )
    assert output.loss.item() == pytest.approx(real.item(), abs=1e-6)
    assert selector(source, lengths).loss is None


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_a_padded_batch_equals_each_row_alone(cell, bidirectional):
    selector = tiny_selector(cell, bidirectional)
    rows = [[4, 5, 6, 7, 8, 9, 10], [11, 12, 13], [14, 15, 16, 17, 18]]
    batched = token_probabilities_batch(selector, rows, batch_size=3)
    for row, probabilities in zip(rows, batched):
        alone = token_probabilities(selector, row)
        assert probabilities.shape == (len(row),)
        torch.testing.assert_close(probabilities, alone, atol=1e-5, rtol=0)


def test_token_probabilities_run_without_dropout_and_restore_the_mode():
    selector = tiny_selector()
    selector.config.dropout = 0.5
    selector.dropout.p = 0.5
    selector.train()
    first = token_probabilities(selector, [4, 5, 6])
    assert torch.equal(first, token_probabilities(selector, [4, 5, 6]))  # no dropout: deterministic
    assert selector.training
    assert token_probabilities_batch(selector, [[], [4]])[0].shape == (0,)


def test_config_refuses_unknown_keys_and_cells():
    with pytest.raises(ValueError, match="unknown selector config keys"):
        SelectorConfig.from_dict({"hidden": 3})
    with pytest.raises(ValueError, match="cell must be one of"):
        SelectorConfig(cell="transformer")
    assert SelectorConfig.from_dict(SelectorConfig().to_dict()) == SelectorConfig()


# --- sentences ------------------------------------------------------------------------------------


def test_split_sentences_on_ptb_text():
    text = 'he said . " it is fine . " then he left ! the u.s. army came ... and went\nno end here'
    assert split_sentences(text) == [
        "he said .",
        '" it is fine . "',
        "then he left !",
        "the u.s. army came ... and went",  # abbreviations and ellipses do not end a sentence
        "no end here",  # a line break does
    ]
    assert split_sentences("( cnn ) first . -rrb- second ?! third") == [
        "( cnn ) first . -rrb-",
        "second ?!",
        "third",
    ]
    assert split_sentences("a b c d e f g .", max_words=3) == ["a b c", "d e f", "g ."]
    assert split_sentences("") == [] and split_sentences(" \n ") == []


def test_encode_sentences_gives_the_whole_texts_ids(tiny_bundle):
    tokenizer = Tokenizer.load(tiny_bundle / "tokenizer.model")
    sentences = split_sentences("police said the storm hit the coast . the court found a new school !")
    ids, spans = encode_sentences(tokenizer, sentences)
    assert ids == tokenizer.encode(" ".join(sentences))
    assert spans[0][0] == 0 and spans[-1][1] == len(ids)
    assert all(end == start for (_, end), (start, _) in itertools.pairwise(spans))


def test_sentence_scores_mean_and_top_k():
    probabilities = torch.tensor([0.9, 0.1, 0.2, 0.8, 0.6, 0.4])
    spans = [(0, 2), (2, 6), (6, 6), (5, 9)]  # an empty span; one past the end
    assert sentence_scores(probabilities, spans) == pytest.approx([0.5, 0.5, 0.0, 0.4])
    assert sentence_scores(probabilities, spans, top_k=2) == pytest.approx([0.5, 0.7, 0.0, 0.4])


def test_select_sentences_keeps_the_best_that_fit_in_document_order():
    scores = [0.2, 0.9, 0.5, 0.8, 0.1]
    counts = [10, 30, 15, 50, 5]
    # best first: 1 (30) fits, 3 (50) does not fit in 70 - 30 = 40, 2 (15) fits, 0 (10) fits, 4 (5) fits
    assert select_sentences(scores, counts, budget_tokens=70) == [0, 1, 2, 4]
    for budget in range(0, 120, 7):
        kept = select_sentences(scores, counts, budget)
        assert kept == sorted(kept) and sum(counts[i] for i in kept) <= budget
    assert select_sentences([0.5], [100], budget_tokens=50) == []  # too long: the caller truncates
    with pytest.raises(ValueError):
        select_sentences([0.5, 0.2], [3], 10)


def test_select_sentences_spreads_over_the_stretches_of_a_very_long_document():
    scores = [0.9, 0.8, 0.7, 0.6, 0.1, 0.2, 0.1, 0.3]  # the selector favours the opening
    counts = [10] * 8
    assert select_sentences(scores, counts, budget_tokens=40) == [0, 1, 2, 3]
    # two stretches, sentences 0-3 and 4-7, 20 tokens each: the best two of each
    assert select_sentences(scores, counts, budget_tokens=40, segments=2) == [0, 1, 5, 7]
    # the opening first (10 tokens), then 3 stretches of the rest with 10 tokens each
    assert select_sentences(scores, counts, budget_tokens=40, lead_tokens=10, segments=3) == [0, 1, 5, 7]
    for segments in range(1, 10):
        kept = select_sentences(scores, counts, 40, segments=segments)
        assert kept == sorted(kept) and sum(counts[i] for i in kept) <= 40


def test_select_sentences_keeps_the_opening_up_to_the_lead_share_first():
    scores = [0.1, 0.2, 0.9, 0.3, 0.8]
    counts = [30, 30, 30, 30, 30]
    assert select_sentences(scores, counts, budget_tokens=90) == [2, 3, 4]  # the selector alone
    assert select_sentences(scores, counts, budget_tokens=90, lead_tokens=30) == [0, 2, 4]
    assert select_sentences(scores, counts, budget_tokens=90, lead_tokens=59) == [0, 2, 4]  # whole sentences
    assert select_sentences(scores, counts, budget_tokens=90, lead_tokens=60) == [0, 1, 2]
    assert select_sentences(scores, counts, budget_tokens=90, lead_tokens=500) == [0, 1, 2]  # the window


def test_extractive_summary_blocks_repeated_trigrams():
    sentences = [
        "the storm hit the coast on monday .",
        "police said the storm hit the coast .",  # shares "the storm hit" with sentence 0
        "schools will stay closed .",
        "the river rose two metres .",
    ]
    scores = [0.7, 0.9, 0.3, 0.5]
    assert extractive_summary(sentences, scores, max_sentences=3) == [1, 2, 3]
    assert extractive_summary(sentences, scores, max_sentences=3, trigram_blocking=False) == [0, 1, 3]
    # by length: stop once 12 words are taken (8 + 6: the second sentence crosses the limit)
    assert extractive_summary(sentences, scores, max_words=12) == [1, 3]
    assert extractive_summary(sentences, scores, max_sentences=1, max_words=100) == [1]
    with pytest.raises(ValueError):
        extractive_summary(sentences, scores)


# --- bundles --------------------------------------------------------------------------------------


def test_bundle_round_trip_with_and_without_a_selector(tiny_bundle, tmp_path):
    plain = load_bundle(tiny_bundle)
    assert plain.selector is None and "selector" not in plain.card
    selector = tiny_selector(vocab_size=plain.tokenizer.vocab_size)
    target = tmp_path / "with-selector"
    save_with_selector(tiny_bundle, target, selector, {"metrics": {"auc": 0.9}})
    loaded = load_bundle(target)
    assert loaded.selector is not None and not loaded.selector.training
    for name, tensor in selector.state_dict().items():
        assert torch.equal(loaded.selector.state_dict()[name], tensor), name
    card = json.loads((target / CONFIG_FILE).read_text())
    assert card["selector"]["metrics"] == {"auc": 0.9}
    assert card["selector"]["model"] == selector.config.to_dict()
    assert card["model"] == plain.card["model"]  # the summarizer is untouched
    for name, tensor in plain.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name
    assert set(load_file(str(target / SELECTOR_WEIGHTS_FILE))) == {n for n, _ in selector.named_parameters()}
    assert load_bundle(tiny_bundle).selector is None  # the source bundle is not changed
    save_with_selector(target, target, tiny_selector(vocab_size=plain.tokenizer.vocab_size))  # in place
    assert load_bundle(target).selector is not None


def test_a_selector_from_another_tokenizer_is_refused(tiny_bundle, tmp_path):
    selector = tiny_selector(vocab_size=Tokenizer.load(tiny_bundle / "tokenizer.model").vocab_size)
    target = tmp_path / "bundle"
    save_with_selector(tiny_bundle, target, selector)
    card = json.loads((target / CONFIG_FILE).read_text())
    card["selector"]["tokenizer_fingerprint"] = "0" * 16
    (target / CONFIG_FILE).write_text(json.dumps(card))
    with pytest.raises(GatesumError, match="another tokenizer"):
        load_bundle(target)
    with pytest.raises(GatesumError, match="vocabulary"):
        save_with_selector(tiny_bundle, tmp_path / "other", tiny_selector(vocab_size=7))
    shutil.rmtree(target)


def test_save_bundle_keeps_a_selector_it_is_given_and_drops_one_it_is_not(tiny_bundle, tmp_path):
    """Re-saving a bundle (export, fine-tuning) must never leave a "selector" section without weights."""
    source = tmp_path / "with-selector"
    save_with_selector(
        tiny_bundle, source, tiny_selector(vocab_size=load_bundle(tiny_bundle).tokenizer.vocab_size)
    )
    bundle = load_bundle(source)
    card = {key: value for key, value in bundle.card.items() if key not in ("format", "version")}
    save_bundle(
        tmp_path / "kept", bundle.model, bundle.tokenizer, bundle.normalizer, card, selector=bundle.selector
    )
    kept = load_bundle(tmp_path / "kept")
    assert kept.selector is not None and kept.card["selector"]["model"] == bundle.card["selector"]["model"]
    save_bundle(tmp_path / "dropped", bundle.model, bundle.tokenizer, bundle.normalizer, card)
    dropped = load_bundle(tmp_path / "dropped")
    assert dropped.selector is None and "selector" not in dropped.card
    assert not (tmp_path / "dropped" / SELECTOR_WEIGHTS_FILE).exists()
