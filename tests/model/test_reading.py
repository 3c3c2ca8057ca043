"""Reading a whole document (issue #15): whole / selected / truncated reads, the extractive
mode, sentence offsets in the raw text, and the bottom-up copy mask."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch

import gatesum
from gatesum.model.bundle import load_bundle
from gatesum.model.copy_mask import copy_masked, restrict_copy
from gatesum.model.errors import GatesumError
from gatesum.model.pipeline import encode_sources, summarize_texts
from gatesum.model.reading import (
    DocumentReader,
    Reading,
    copy_sources,
    document_sentences,
    read_documents,
    read_together,
    sentence_offsets,
    word_maxima,
)
from gatesum.model.search import GenerationConfig
from gatesum.model.selector import extractive_summary, sentence_scores, split_sentences, token_probabilities
from gatesum.model.text import normalize
from tests.helpers import make_rows

WINDOW = 40  # source tokens the summarizer reads: the 12-sentence documents below are ~130
FAST = GenerationConfig(beam_size=2, max_length=6)


@pytest.fixture(scope="module")
def selector_bundle(make_selector_bundle):
    return load_bundle(make_selector_bundle(WINDOW))


@pytest.fixture(scope="module")
def plain_bundle(make_tiny_bundle):
    return load_bundle(make_tiny_bundle(WINDOW))


@pytest.fixture(scope="module")
def texts():
    return [row["article"] for row in make_rows([2, 12], seed=3)]


def test_sentence_offsets_find_each_sentence_in_the_raw_text():
    raw = (
        "The U.S. team can\u2019t win\u2014officials said \u201cno.\u201d  Mr. Smith cannot agree!\n"
        "(Reuters) Prices rose 20% in New York\u2026 Nothing else."
    )
    sentences = split_sentences(normalize(raw))
    assert sentences[0] == 'the u.s. team ca n\'t win -- officials said " no . "'  # far from the raw text
    spans = sentence_offsets(raw, sentences)
    assert [raw[start:end] for start, end in spans] == [
        "The U.S. team can\u2019t win\u2014officials said \u201cno.\u201d",
        "Mr. Smith cannot agree!",
        "(Reuters) Prices rose 20% in New York\u2026 Nothing else.",
    ]
    assert sentence_offsets(raw, [*sentences, "zebra ."])[-1] == (spans[-1][1], spans[-1][1])  # not there


def test_a_short_text_is_read_whole_with_the_same_ids_as_before(plain_bundle, texts):
    [reading] = read_documents(plain_bundle, texts[:1])
    [ids], [length] = encode_sources(plain_bundle, texts[:1])
    assert reading.read == "whole" and reading.source_ids == ids and reading.input_tokens == length
    assert [use.index for use in reading.sentences] == [0, 1] and reading.sentence_count == 2
    assert all(use.score is None for use in reading.sentences)  # no selector: no scores


def test_a_long_text_without_a_selector_is_truncated(plain_bundle, texts):
    [reading] = read_documents(plain_bundle, texts[1:])
    [ids], [length] = encode_sources(plain_bundle, texts[1:])
    assert reading.read == "truncated" and reading.source_ids == ids and len(ids) == WINDOW
    _, all_ids, spans = document_sentences(plain_bundle, texts[1])
    assert reading.input_tokens == length == len(all_ids) > WINDOW
    assert [use.index for use in reading.sentences] == [
        i for i, (start, _) in enumerate(spans) if start < WINDOW
    ]
    [summary] = summarize_texts(plain_bundle, texts[1:], FAST)
    assert summary.read == "truncated" and summary.truncated


def test_a_long_text_with_a_selector_reads_the_best_sentences_in_order(selector_bundle, texts):
    [reading] = read_documents(selector_bundle, texts[1:])
    sentences, ids, spans = document_sentences(selector_bundle, texts[1])
    scores = sentence_scores(token_probabilities(selector_bundle.selector, ids), spans)  # whole document
    kept = [use.index for use in reading.sentences]
    assert reading.read == "selected" and kept == sorted(kept) and len(kept) < len(sentences)
    assert reading.source_ids == [token for i in kept for token in ids[spans[i][0] : spans[i][1]]]
    assert len(reading.source_ids) <= WINDOW
    left_out = set(range(len(sentences))) - set(kept)
    # best first: every sentence left out that would still have fitted scores below all kept ones
    room = WINDOW - len(reading.source_ids)
    fitting = [i for i in left_out if spans[i][1] - spans[i][0] <= room]
    assert all(scores[i] <= min(scores[k] for k in kept) for i in fitting)
    assert [use.score for use in reading.sentences] == [round(scores[i], 4) for i in kept]
    assert reading.source_probabilities.shape == (len(reading.source_ids),)
    for use in reading.sentences:  # the offsets point at the sentence in the raw text
        assert normalize(texts[1][use.start : use.end]) == sentences[use.index]
    [summary] = summarize_texts(selector_bundle, texts[1:], FAST)
    assert summary.read == "selected" and not summary.truncated
    assert [use.index for use in summary.sentences] == kept


def test_extractive_mode_gives_the_best_sentences_trigram_blocked(selector_bundle, texts):
    summaries = gatesum.Pipeline(selector_bundle).summarize(texts, mode="extractive", extract_sentences=2)
    for text, summary in zip(texts, summaries):
        sentences, ids, spans = document_sentences(selector_bundle, text)
        scores = sentence_scores(token_probabilities(selector_bundle.selector, ids), spans)
        kept = extractive_summary(sentences, scores, max_sentences=2)
        assert summary.mode == "extractive" and summary.read == "whole" and not summary.truncated
        assert [use.index for use in summary.sentences] == kept
        assert summary.normalized.split("\n") == [sentences[i] for i in kept]  # one per line: ROUGE-Lsum
        assert summary.summary == " ".join(text[use.start : use.end] for use in summary.sentences)
        assert summary.token_ids == []


def test_extractive_mode_and_the_copy_mask_need_a_selector(plain_bundle, texts):
    with pytest.raises(GatesumError, match="extractive mode needs a content selector"):
        summarize_texts(plain_bundle, texts, mode="extractive")
    with pytest.raises(GatesumError, match=r"copy mask \(copy_mask_threshold > 0\) needs a content selector"):
        summarize_texts(plain_bundle, texts, GenerationConfig(copy_mask_threshold=0.5))
    with pytest.raises(GatesumError, match="mode must be one of abstractive, extractive"):
        summarize_texts(plain_bundle, texts, mode="bullets")


def test_explain_adds_the_selectors_scores_of_the_tokens_read(selector_bundle, plain_bundle, texts):
    [summary] = summarize_texts(selector_bundle, texts[1:], FAST, explain=True)
    assert len(summary.selection) == len(summary.source_ids) and all(0 < p < 1 for p in summary.selection)
    [plain] = summarize_texts(plain_bundle, texts[1:], FAST, explain=True)
    assert plain.selection is None


def test_texts_read_together_are_read_as_each_reader_reads_it_alone(selector_bundle, texts):
    """One batched selector pass for the texts of one piece (the service's short requests) gives
    each the Reading its own reader gives; a text longer than a piece is left, tokenized, to be
    read in pieces, and then reads the same."""
    many = texts + [row["article"] for row in make_rows([3, 8, 12], seed=4)]
    settings = [("abstractive", 0.5), ("abstractive", 0.0), ("extractive", 0.0)]
    for mode, threshold in settings:
        readers = [[DocumentReader(selector_bundle, text, mode, threshold, 2, 0.5) for text in many]
                   for _ in range(2)]  # fmt: skip
        alone = [reader.advance(10_000) for reader in readers[0]]
        together = read_together(readers[1], max_tokens=10_000)
        for one, other in zip(alone, together, strict=True):
            assert (other.read, other.source_ids) == (one.read, one.source_ids)
            assert other.sentences == one.sentences
            assert other.extract == one.extract
            if one.source_probabilities is None:
                assert other.source_probabilities is None
            else:
                torch.testing.assert_close(other.source_probabilities, one.source_probabilities)
    readers = [DocumentReader(selector_bundle, text, copy_mask_threshold=0.5) for text in many]
    lengths = [len(document_sentences(selector_bundle, text)[1]) for text in many]
    piece = sorted(lengths)[len(lengths) // 2]
    left = read_together(readers, max_tokens=piece)
    assert [reading is None for reading in left] == [length > piece for length in lengths]
    for reader, reading, text in zip(readers, left, many, strict=True):
        if reading is None:
            assert reader.document is not None and reader.selector_pass is None  # tokenized, no pass yet
            assert reader.selector_tokens_left == len(reader.document[1])
            [whole] = read_documents(selector_bundle, [text], copy_mask_threshold=0.5)
            while (reading := reader.advance(16)) is None:
                pass
            assert reading.source_ids == whole.source_ids and reading.sentences == whole.sentences


# --- the bottom-up copy mask ----------------------------------------------------------------------


def test_restrict_copy_renormalizes_over_kept_tokens_and_leaves_other_rows_alone():
    attention = torch.tensor([[0.5, 0.3, 0.2, 0.0], [0.1, 0.6, 0.3, 0.0], [0.7, 0.3, 0.0, 0.0]])  # (3, 4)
    mask = torch.tensor([[True, True, True, False]] * 2 + [[True, True, False, False]])
    copy_source = torch.tensor([[5, 0, 7, 0], [5, 6, 7, 0], [0, 0, 0, 0]])  # PAD (0) where masked
    restricted = restrict_copy(attention, copy_source, mask, pad_id=0)
    torch.testing.assert_close(restricted[0], torch.tensor([0.5 / 0.7, 0.0, 0.2 / 0.7, 0.0]))
    assert torch.equal(restricted[1], attention[1])  # nothing masked: bit for bit
    assert torch.equal(restricted[2], attention[2])  # everything masked: no mass to renormalize


def test_the_copy_mask_keeps_masked_tokens_out_of_the_copy_distribution(selector_bundle):
    model = selector_bundle.model
    torch.manual_seed(0)
    source = torch.tensor([[11, 12, 13, 14, 15], [21, 22, 23, 24, 25]])  # (B, S)
    lengths = torch.tensor([5, 5])
    copy_source = source.clone()
    copy_source[0, 1:3] = model.config.pad_id  # row 0 may not copy 12 or 13
    encoded = model.encoder(source, lengths)
    state = model.decoder.initial_state(encoded, model.bridge(encoded))
    output, _ = model.decoder.step(
        torch.full((2,), model.config.bos_id), state, encoded, model.decoder.keys(encoded)
    )
    masked = copy_masked(output, replace(encoded, source=copy_source), model.config.pad_id)
    probabilities = model.decoder.log_probs(masked, copy_source).exp()  # (B, V)
    vocabulary = torch.softmax(model.decoder.logits(output.attentional), -1)
    p_gen = output.copy_gate.squeeze(-1)
    for token in (12, 13):  # masked: only the generator's share is left
        torch.testing.assert_close(probabilities[0, token], p_gen[0] * vocabulary[0, token])
    kept = output.attention[0, [0, 3, 4]]
    for position, token in zip([0, 3, 4], [11, 14, 15]):  # kept: the copy share renormalized over them
        expected = (
            p_gen[0] * vocabulary[0, token] + (1 - p_gen[0]) * output.attention[0, position] / kept.sum()
        )
        torch.testing.assert_close(probabilities[0, token], expected)
    unmasked = model.decoder.log_probs(output, source).exp()
    assert torch.equal(probabilities[1], unmasked[1])  # a row without a mask is unchanged


def test_summaries_with_the_copy_mask(selector_bundle, texts):
    threshold = 0.5
    readings = read_documents(selector_bundle, texts, copy_mask_threshold=threshold)
    masked = copy_sources(readings, threshold, pad_id=0)
    for reading, row in zip(readings, masked):
        allowed = (reading.source_probabilities > threshold).tolist()
        assert 0 < sum(allowed) < len(allowed)  # the tiny selector's scores straddle 0.5
        assert row == [token if keep else 0 for token, keep in zip(reading.source_ids, allowed)]
    assert copy_sources(readings, 0.0, pad_id=0) is None  # off
    setting = GenerationConfig(beam_size=2, max_length=6, copy_mask_threshold=threshold)
    summaries = summarize_texts(selector_bundle, texts, setting)
    assert [s.read for s in summaries] == ["whole", "selected"]
    assert all(1 <= len(s.token_ids) <= 6 for s in summaries)
    unmasked = summarize_texts(selector_bundle, texts, replace(setting, copy_mask_threshold=0.0))
    assert [s.token_ids for s in summaries] != [s.token_ids for s in unmasked]  # the mask changes the copy


def test_the_copy_mask_keeps_or_drops_whole_words(selector_bundle):
    """Pieces of one word share the largest of their P(copied): "▁sample" above the threshold
    keeps its "s" below it; a word below it in all its pieces is dropped whole."""
    tokenizer = selector_bundle.tokenizer
    ids = tokenizer.encode("dna samples were taken")
    pieces = tokenizer.id_to_piece(ids)
    starts = [tokenizer.word_starts[token] for token in ids]
    assert starts[0] and not all(starts)  # some word is more than one piece
    words = torch.cumsum(torch.tensor(starts).long(), 0) - 1
    probabilities = torch.linspace(0.9, 0.1, len(ids))  # falls along the text: it cuts some word
    pooled = word_maxima(ids, probabilities, tokenizer.word_starts)
    for position in range(len(ids)):
        same_word = probabilities[words == words[position]]
        assert pooled[position] == same_word.max(), pieces
    threshold = float(probabilities[len(ids) // 2])
    reading = Reading("whole", ids, len(ids), [], 1, probabilities)
    [masked] = copy_sources([reading], threshold, 0, tokenizer.word_starts)
    assert masked == [token if pooled[i] > threshold else 0 for i, token in enumerate(ids)]
    for word in words.unique():  # whole words, never a part
        kept = {masked[i] != 0 for i in range(len(ids)) if words[i] == word}
        assert len(kept) == 1


def test_the_running_batch_applies_the_copy_mask_as_summarize_texts_does(selector_bundle):
    """Texts with the copy mask beside texts without it, joining one RunningBatch at different
    steps: each decodes to the tokens summarize_texts gives it."""
    from gatesum.model.running import RunningBatch

    texts = [row["article"] for row in make_rows([3, 12, 2, 5], seed=7)]
    masked = GenerationConfig(beam_size=3, max_length=8, copy_mask_threshold=0.5)
    plain = GenerationConfig(beam_size=2, max_length=8)
    configs = [masked, plain, masked, plain]
    batch = RunningBatch(selector_bundle.model)
    decoded, step = {}, 0
    while step < 2 * len(texts) or batch.rows:
        if step % 2 == 0 and step // 2 < len(texts):
            index, config = step // 2, configs[step // 2]
            readings = read_documents(
                selector_bundle, [texts[index]], copy_mask_threshold=config.copy_mask_threshold
            )
            copy = copy_sources(readings, config.copy_mask_threshold, selector_bundle.model.config.pad_id,
                                selector_bundle.tokenizer.word_starts)  # fmt: skip
            batch.admit([readings[0].source_ids], config, [index], copy_sources=copy)
        decoded.update((item.handle, item.tokens) for item in batch.step())
        step += 1
    for index, (text, config) in enumerate(zip(texts, configs)):
        [alone] = summarize_texts(selector_bundle, [text], config)
        assert decoded[index] == alone.token_ids, index


def test_an_unpunctuated_transcript_is_cut_into_pieces_that_fit_the_window(make_selector_bundle):
    bundle = load_bundle(make_selector_bundle(200))
    rng = random.Random(0)
    words = "police said the storm hit the coast and the team won the match".split()
    transcript = " ".join(rng.choice(words) for _ in range(600))  # one line, no sentence ends
    [reading] = read_documents(bundle, [transcript])
    sentences, _, _ = document_sentences(bundle, transcript)
    assert len(sentences) == 8 and max(len(sentence.split()) for sentence in sentences) == 80
    assert reading.read == "selected" and 0 < len(reading.source_ids) <= 200
    for use in reading.sentences:  # a piece of a line still points at its words in the text
        assert normalize(transcript[use.start : use.end]) == sentences[use.index]
