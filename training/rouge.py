"""ROUGE with Google's ``rouge-score`` and the Lead-3 baseline, the CNN/DailyMail way.

ROUGE-1/2/L and ROUGE-Lsum F1 with Porter stemming, ×100. ROUGE-Lsum is computed over
newline-separated sentences (the standard for CNN/DM; plain ROUGE-L treats the summary as one
sequence), so both sides are split into sentences first.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rouge_score import rouge_scorer

METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum")
# A sentence ends at a standalone . ! ? (normalized text: "it ends . next"), or, in raw text,
# at one closing a word of 3+ characters before a capital ("ends. Next", but not "Mr. Smith").
_SENTENCE_END = re.compile(r"(?<=\s[.!?])\s+|(?<=\w{3}[.!?])\s+(?=[A-Z\"'(])")


def split_sentences(text: str) -> list[str]:
    """Sentences of a text: its lines if it has several, else split at sentence ends."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > 1:
        return lines
    text = lines[0] if lines else ""
    return [sentence.strip() for sentence in _SENTENCE_END.split(text) if sentence and sentence.strip()]


def lead(article: str, count: int = 3) -> str:
    """The first ``count`` sentences, one per line: the Lead-3 baseline."""
    return "\n".join(split_sentences(article)[:count])


def lead_words(article: str, words: int) -> str:
    """Lead-k sized to a length: the first sentences, one per line, until they hold at least
    ``words`` words (the baseline for long documents, whose references are longer than three
    sentences)."""
    sentences, total = [], 0
    for sentence in split_sentences(article):
        if total >= words:
            break
        sentences.append(sentence)
        total += len(sentence.split())
    return "\n".join(sentences)


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean F1 (×100) of each metric over the pairs."""
    return aggregate(rouge_per_document(predictions, references))


def rouge_per_document(predictions: Sequence[str], references: Sequence[str]) -> list[dict[str, float]]:
    """F1 of each metric for each pair (0..1), for breakdowns by document."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    scorer = rouge_scorer.RougeScorer(list(METRICS), use_stemmer=True)
    results = []
    for prediction, reference in zip(predictions, references):
        # Lsum reads newlines as sentence boundaries; the others ignore them.
        score = scorer.score("\n".join(split_sentences(reference)), "\n".join(split_sentences(prediction)))
        results.append({metric: value.fmeasure for metric, value in score.items()})
    return results


def aggregate(scores: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean of per-document scores, ×100."""
    if not scores:
        return dict.fromkeys(METRICS, 0.0)
    return {metric: 100 * sum(score[metric] for score in scores) / len(scores) for metric in METRICS}
