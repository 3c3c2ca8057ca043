"""Tokenizer: fixed special ids, lossless round trip with byte fallback, deterministic training."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from gatesum.model.errors import GatesumError
from gatesum.model.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer

WORDS = ["the", "a", "police", "said", "president", "government", "people", "year", "new", "first", "two",
         "would", "could", "after", "over", "world", "time", "man", "woman", "city", "officials", "told",
         "cnn", "u.s.", "report", ".", ",", '"', "'s", "n't"]  # fmt: skip
UNSEEN = 'the café in zürich said " it \'s fine . " 日本 😀'


def corpus(seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30))) for _ in range(400)]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    return Tokenizer.train(corpus(), tmp_path_factory.mktemp("tok") / "tokenizer.model", vocab_size=300)


def test_special_ids_are_fixed(tokenizer: Tokenizer) -> None:
    assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
    assert tokenizer.id_to_piece([0, 1, 2, 3]) == ["<pad>", "<unk>", "<s>", "</s>"]
    assert tokenizer.vocab_size == 300


def test_round_trip_is_lossless_and_byte_fallback_leaves_no_unk(tokenizer: Tokenizer) -> None:
    for text in [*corpus(seed=1)[:50], UNSEEN]:
        ids = tokenizer.encode(text)
        assert UNK_ID not in ids
        assert all(0 <= i < 300 for i in ids)
        assert tokenizer.decode(ids) == text
    emoji = tokenizer.encode("😀")
    assert len(emoji) >= 4  # four UTF-8 bytes, each its own id (plus perhaps "▁")


def test_decode_stops_at_eos_and_skips_pad_and_bos(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("the police said")
    assert tokenizer.decode([BOS_ID, *ids, EOS_ID, *tokenizer.encode("more"), PAD_ID]) == "the police said"
    assert tokenizer.decode([PAD_ID, *ids, PAD_ID]) == "the police said"
    assert tokenizer.decode([]) == ""


def test_encode_batch_matches_encode(tokenizer: Tokenizer) -> None:
    texts = corpus(seed=2)[:20]
    assert tokenizer.encode_batch(texts) == [tokenizer.encode(text) for text in texts]
    assert tokenizer.encode("a b\nc") == tokenizer.encode("a b c")  # line breaks are spaces


def test_pieces_are_readable(tokenizer: Tokenizer) -> None:
    pieces = tokenizer.id_to_piece(tokenizer.encode("the é 😀"))
    assert pieces[0] == "▁the"
    assert "é" in pieces and "😀" in pieces
    assert len(pieces) == len(tokenizer.encode("the é 😀"))  # one label per id
    assert not any(piece.startswith("<0x") for piece in pieces)


def test_training_is_deterministic_and_load_gives_the_same_tokenizer(tmp_path: Path) -> None:
    first = Tokenizer.train(corpus(), tmp_path / "a.model", vocab_size=300)
    second = Tokenizer.train(corpus(), tmp_path / "b.model", vocab_size=300)
    assert (tmp_path / "a.model").read_bytes() == (tmp_path / "b.model").read_bytes()
    loaded = Tokenizer.load(tmp_path / "a.model")
    assert loaded.fingerprint == first.fingerprint == second.fingerprint
    assert loaded.encode(UNSEEN) == first.encode(UNSEEN)


def test_bpe_works_and_unknown_model_type_is_refused(tmp_path: Path) -> None:
    bpe = Tokenizer.train(corpus(), tmp_path / "bpe.model", vocab_size=300, model_type="bpe")
    assert bpe.decode(bpe.encode(UNSEEN)) == UNSEEN
    with pytest.raises(GatesumError, match="model_type"):
        Tokenizer.train(corpus(), tmp_path / "x.model", vocab_size=300, model_type="word")


def test_load_names_a_missing_or_corrupt_file(tmp_path: Path) -> None:
    with pytest.raises(GatesumError, match=r"missing\.model: tokenizer file not found"):
        Tokenizer.load(tmp_path / "missing.model")
    corrupt = tmp_path / "corrupt.model"
    corrupt.write_bytes(b"\x00not a sentencepiece model\xff" * 10)
    with pytest.raises(GatesumError, match=r"corrupt\.model: not a sentencepiece model"):
        Tokenizer.load(corrupt)


def test_load_refuses_a_model_with_other_special_ids(tmp_path: Path) -> None:
    import io

    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus()), model_writer=model, vocab_size=50,
                                   minloglevel=2)  # fmt: skip
    (tmp_path / "other.model").write_bytes(model.getvalue())
    with pytest.raises(GatesumError, match=r"other\.model: special ids"):
        Tokenizer.load(tmp_path / "other.model")


def test_a_vocabulary_larger_than_the_corpus_allows_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(GatesumError, match="tokenizer training failed"):
        Tokenizer.train(corpus()[:5], tmp_path / "big.model", vocab_size=50_000)
