"""``Tokenizer``: subword ids for normalized text, a thin wrapper around sentencepiece.

Fixed special ids (the model's embedding and the search rely on them): pad 0, unk 1, bos 2,
eos 3. The model is trained with ``byte_fallback``: a character that is not in the vocabulary
is spelled as its UTF-8 bytes (``<0xE2>`` ...), so every input encodes without ``<unk>``. The
copy mechanism relies on that: there is no out-of-vocabulary word, so copying a rare name is
copying ordinary ids that the decoder can also generate, and no per-document extended
vocabulary is needed.

Text is expected to be normalized already (``model.text.normalize``); the sentencepiece
normalization is ``identity`` so that ``decode(encode(text)) == text`` for such text.
"""

from __future__ import annotations

import functools
import hashlib
import io
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import sentencepiece as spm

from gatesum.model.errors import GatesumError

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
_BYTE_PIECE = re.compile(r"^<0x([0-9A-F]{2})>$")


class Tokenizer:
    """Text <-> ids. Build one with ``Tokenizer.train`` or ``Tokenizer.load``."""

    def __init__(self, processor: spm.SentencePieceProcessor, path: Path | None = None) -> None:
        self.processor = processor
        self.path = path
        # identifies the vocabulary: part of the datasets cache fingerprint and of model bundles
        self.fingerprint = hashlib.sha256(processor.serialized_model_proto()).hexdigest()[:16]

    @classmethod
    def train(cls, texts: Iterable[str], output_path: Path, vocab_size: int, model_type: str = "unigram",
              input_sentence_size: int = 2_000_000, seed: int = 0,
              num_threads: int = 2) -> Tokenizer:  # fmt: skip
        """Train on ``texts`` (one sentence or document each) and write the model to ``output_path``.

        Each line of a text is one training sentence (an article is one line of ~3 KB, which
        ``max_sentence_length`` allows). ~20k CNN/DM documents make ~100k lines, all kept; past
        ``input_sentence_size`` sentencepiece samples, shuffled with ``seed``. The same texts
        and seed give the same file byte for byte.
        """
        if model_type not in ("unigram", "bpe"):
            raise GatesumError(f"tokenizer model_type must be 'unigram' or 'bpe', not {model_type!r}")
        spm.set_random_generator_seed(seed)
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=_sentences(texts),
                model_writer=model,
                vocab_size=vocab_size,
                model_type=model_type,
                pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
                byte_fallback=True,
                character_coverage=1.0,  # rare characters fall back to bytes, never <unk>
                normalization_rule_name="identity",  # model.text.normalize has done that work
                input_sentence_size=input_sentence_size,
                shuffle_input_sentence=True,
                max_sentence_length=1 << 16,  # whole CNN/DM articles, in bytes
                num_threads=num_threads,
                minloglevel=2,
            )  # fmt: skip
        except RuntimeError as error:  # e.g. vocab_size too large for the corpus
            raise GatesumError(f"tokenizer training failed: {error}") from error
        output_path = Path(output_path)
        output_path.parent.mkdir(parents=True, exist_ok=True)
        output_path.write_bytes(model.getvalue())
        return cls.load(output_path)

    @classmethod
    def load(cls, path: Path) -> Tokenizer:
        """Read a ``.model`` file written by ``train``; GatesumError naming the file if unusable."""
        path = Path(path)
        if not path.is_file():
            raise GatesumError(f"{path}: tokenizer file not found")
        processor = spm.SentencePieceProcessor()
        try:
            processor.load_from_serialized_proto(path.read_bytes())
        except (RuntimeError, OSError) as error:
            raise GatesumError(f"{path}: not a sentencepiece model ({error})") from error
        specials = (processor.pad_id(), processor.unk_id(), processor.bos_id(), processor.eos_id())
        if specials != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
            raise GatesumError(
                f"{path}: special ids (pad, unk, bos, eos) are {specials}, expected (0, 1, 2, 3)"
            )
        return cls(processor, path)

    @property
    def vocab_size(self) -> int:
        return self.processor.get_piece_size()

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``, without BOS/EOS; line breaks count as spaces."""
        return self.processor.encode(text.replace("\n", " "), out_type=int)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.processor.encode([text.replace("\n", " ") for text in texts], out_type=int)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids`` up to the first EOS; PAD and BOS are skipped."""
        kept = []
        for token in ids:
            token = int(token)
            if token == EOS_ID:
                break
            if token not in (PAD_ID, BOS_ID):
                kept.append(token)
        return self.processor.decode(kept)

    @functools.cached_property
    def word_starts(self) -> list[bool]:
        """Per id: whether its piece begins a word (sentencepiece's ▁ prefix; the special ids
        too). Byte pieces and the rest continue the word before them."""
        processor = self.processor
        return [processor.is_control(i) or processor.is_unknown(i) or processor.id_to_piece(i).startswith("▁")
                for i in range(processor.get_piece_size())]  # fmt: skip

    def id_to_piece(self, ids: Iterable[int]) -> list[str]:
        """One readable label per id, for attention plots: ``▁the``, ``</s>``, and byte pieces
        shown as the character they start (``<0xC3><0xA9>`` -> ``é``, ``·``)."""
        pieces = [self.processor.id_to_piece(int(token)) for token in ids]
        labels = list(pieces)
        start = 0
        while start < len(pieces):
            end = start
            while end < len(pieces) and _BYTE_PIECE.match(pieces[end]):
                end += 1
            if end > start:
                labels[start:end] = _byte_labels(pieces[start:end])
            start = end + 1
        return labels


def _byte_labels(pieces: list[str]) -> list[str]:
    """Byte pieces -> the character each UTF-8 sequence spells on its first byte, '·' after."""
    data = bytes(int(_BYTE_PIECE.match(piece).group(1), 16) for piece in pieces)
    labels, index = [], 0
    while index < len(data):
        widths = [w for w in (4, 3, 2, 1) if index + w <= len(data)]
        width = next((w for w in widths if _decodes(data[index : index + w])), 0)
        if width == 0:
            labels.append(pieces[index])  # a stray byte: keep <0x..>
            index += 1
            continue
        labels += [data[index : index + width].decode()] + ["·"] * (width - 1)
        index += width
    return labels


def _decodes(data: bytes) -> bool:
    try:
        return len(data.decode()) == 1
    except UnicodeDecodeError:
        return False


def _sentences(texts: Iterable[str]) -> Iterator[str]:
    for text in texts:
        for line in text.splitlines():
            if line.strip():
                yield line
