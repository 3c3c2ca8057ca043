"""Text normalization: raw text <-> the lowercased, PTB-tokenized style of our CNN/DM files.

The same ``normalize`` prepares the training text and a user's raw cased text at inference, so
the model always sees one style. That style was read off ``cnndm/train.jsonl.gz`` (the Stanford
CoreNLP PTB tokenizer as used by See et al. 2017), not guessed:

* lowercase; punctuation split off (``said , " it 's fine . "``); clitics split
  (``it 's``, ``do n't``, ``wo n't``, ``they 're``), ``cannot`` -> ``can not``, ``gonna`` -> ``gon na``;
* brackets stay ``(`` ``)`` ``[`` ``]`` and quotes stay ``"``: the files hold no -lrb- and no
  opening-quote backticks. ``NormalizerConfig(ptb_escapes=True)`` writes the Penn Treebank
  escapes instead (-lrb- -rrb- -lsb- ..., and two backticks / two apostrophes for quotes);
* abbreviations keep their period (``u.s.``, ``p.m.``, ``mr.``, ``no. 1``); numbers keep theirs
  (``41.1``, ``1,000``, ``4:30``, ``9/11``); ``$ 41.1``, ``20 %``; URLs and e-mails stay whole;
* hyphenated words are split (``miami - dade``, ``20 - year - old``) unless the first part is a
  prefix such as ``e-``, ``anti-``, ``co-``, ``re-`` (``e-mail``, ``co-founder``): CoreNLP's list.

``normalize`` is idempotent: text already in that style passes through unchanged. Line breaks
are kept (highlights are one sentence per line). Work is linear in the input: each distinct
whitespace-separated word is split once by compiled regexes and the result is cached.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class NormalizerConfig:
    """How text is normalized; stored in the model bundle's config.json (``asdict`` / ``**dict``)."""

    lowercase: bool = True
    ptb: bool = True  # PTB tokenization: split punctuation, clitics and hyphens
    ptb_escapes: bool = False  # brackets as -lrb-/-rrb-..., quotes as `` '' (See et al.'s .bin files)


# --- character cleanup, applied before tokenizing -------------------------------------------------

CHARACTER_MAP = str.maketrans(
    {
        "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
        "\u2018": "'", "\u2019": "'", "\u201b": "'", "\u2032": "'",
        "\u2014": " -- ", "\u2015": " -- ", "\u2013": " -- ", "\u2012": "-", "\u2010": "-", "\u2011": "-",
        "\u2026": "...",
        "\u200b": "", "\u200c": "", "\u200d": "", "\u2060": "", "\ufeff": "", "\u00ad": "",
    }
)  # fmt: skip

# --- tokenization ---------------------------------------------------------------------------------

_ESCAPES = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_UNESCAPES = {escape: bracket for bracket, escape in _ESCAPES.items()}
_CLITICS = frozenset({"'s", "'m", "'d", "'ll", "'re", "'ve", "n't"})


def _word_set(words: str) -> frozenset[str]:
    return frozenset(words.split())


# CoreNLP keeps these hyphenated words whole (PTBLexer's prefix and suffix exception lists).
_HYPHEN_PREFIXES = _word_set(
    "e a u x agro ante anti arch be bi bio co counter cross cyber de eco ex extra inter intra macro "
    "mega micro mid mini multi neo non over pan para peri post pre pro pseudo quasi re semi sub "
    "super tri ultra un uni vice"
)
_HYPHEN_SUFFIXES = _word_set("esque ette fest fold gate itis less most rama wise")
_ABBREVIATIONS = _word_set(
    "mr mrs ms messrs dr drs prof sen sens rep reps gov govs govt gen lt col capt sgt spc pfc maj adm "
    "cpl cmdr amb rev st jr sr inc corp co cos ltd pty bros vs etc est fl oz sq ct mt ft ave blvd dept "
    "pres supt det insp pvt brig jan feb mar apr jun jul aug sep sept oct nov dec mon tue tues wed "
    "thu thur thurs fri sat ala ariz ark calif colo conn del fla ga kan ky md mich minn mont neb nev "
    "okla pa penn tenn va vt wis wyo"
)
_SPLIT_WORDS = {"cannot": 3, "gonna": 3, "gotta": 3, "wanna": 3, "lemme": 3, "gimme": 3}  # at index

_URL = re.compile(
    r"(?:https?://|www\.)\S+|[\w.+-]+@[\w-]+\.[\w.-]+"
    r"|(?:[\w-]+\.)+(?:com|org|net|gov|edu|mil|int|info|biz|tv|co|uk|us|ca|au|de|fr|ly|io)(?:/\S*)?",
    re.IGNORECASE,
)
_URL_TRAIL = ".,;:!?)]}\"'"  # punctuation after a URL is not part of it
# always their own token: brackets, quotes, ; ? ! %, runs of dots and of two or more hyphens
_ALWAYS = re.compile(r"(\.{2,}|-{2,}|[?!]+|[()\[\]{}\";%]|``|'')")
_UNLESS_DIGITS = re.compile(r"(?<!\d)([,:/])|([,:/])(?!\d)")  # 1,000  4:30  9/11 stay whole
_CURRENCY = re.compile(r"([$£€¥])(?=\d)")
_CLITIC = re.compile(r"^(.*[^\W_])(n't|'s|'m|'d|'ll|'re|'ve)$", re.IGNORECASE)
_INITIALS = re.compile(r"(?:[^\W\d_]\.)+$|(?:[^\W\d_]{1,2}\.){2,}$")  # u.s.  j.  p.m.  ph.d.
_PUNCTUATION_ONLY = re.compile(r"^[^\w]+$")  # ... -- `` '' ( and friends are tokens as they are
_PHONE = re.compile(r"^\d[\d/]*\d-\d{3,}$|^\d+(?:-\d+){2,}$")  # 867-5309  303/337-0990
# '90s 's 'em 'n' 'cause; and y' ol' o' d' whose apostrophe is part of the word
_KEEP_APOSTROPHE = re.compile(
    r"'(?:\d|(?:s|m|d|ll|re|ve|em|n'?|cause|til|tis|twas|t)$)|(?:y|ol|o|d)'$", re.IGNORECASE
)  # used with .match(text, start, end): no ^, and $ is `end`


def _is_abbreviation(text: str, start: int, end: int) -> bool:
    """``text[start:end]`` ends with '.'; True when that period belongs to the word (u.s., mr.)."""
    window = max(start, end - 24)  # abbreviations are short: bounded work, however long the word
    hyphen = text.rfind("-", window, end)  # non-u.s.
    if hyphen < 0 and window > start:
        return False
    start = max(start, hyphen + 1)
    return bool(_INITIALS.match(text, start, end)) or (
        end - start <= 8 and text[start : end - 1].lower() in _ABBREVIATIONS
    )


def _split_hyphens(word: str) -> str:
    """``miami-dade`` -> ``miami - dade``; ``e-mail``, ``co-founder``, ``867-5309`` stay whole."""
    parts = word.split("-")
    if len(parts) == 1 or "" in parts or "." in parts[-1] or _PHONE.match(word):  # japan-u.s. stays
        return word
    if parts[0].lower() in _HYPHEN_PREFIXES or parts[-1].lower() in _HYPHEN_SUFFIXES:
        return word
    return " - ".join(parts)


def _split_piece(piece: str) -> list[str]:
    """One piece without brackets/quotes/commas: peel quotes and periods, split clitics, hyphens.

    Peeling moves indices instead of slicing, to stay linear on a pathological 1 MB "word".
    """
    if piece in _CLITICS or _PUNCTUATION_ONLY.match(piece) or _KEEP_APOSTROPHE.match(piece):
        return [piece]
    start, end = 0, len(piece)
    while end - start > 1 and piece[end - 1] in ".'" and not _KEEP_APOSTROPHE.match(piece, start, end):
        if piece[end - 1] == "." and _is_abbreviation(piece, start, end):
            break
        end -= 1
    while end - start > 1 and piece[start] in "'`" and not _KEEP_APOSTROPHE.match(piece, start, end):
        start += 1
    word = piece[start:end]
    middle = [word]
    clitic = _CLITIC.match(word)
    if clitic:
        middle = [clitic.group(1), clitic.group(2)]
    split_at = _SPLIT_WORDS.get(middle[0].lower())
    if split_at:
        middle[:1] = [middle[0][:split_at], middle[0][split_at:]]
    return [*piece[:start], *(_split_hyphens(word) for word in middle), *piece[end:]]


def _tokenize_word(word: str) -> str:
    """PTB-tokenize one whitespace-free word; short words are cached (most words repeat)."""
    return _tokenize_cached(word) if len(word) <= 64 else _tokenize_uncached(word)


def _tokenize_uncached(word: str) -> str:
    lowered = word.lower()
    if lowered in _UNESCAPES:
        return _UNESCAPES[lowered]
    if lowered == "yahoo!":
        return word
    url = _URL.fullmatch(word.rstrip(_URL_TRAIL)) or _URL.fullmatch(word)
    if url:
        trail = word[url.end() :]
        return " ".join([url.group(0), *trail]) if trail else word
    spaced = _CURRENCY.sub(r"\1 ", _UNLESS_DIGITS.sub(r" \1\2 ", _ALWAYS.sub(r" \1 ", word)))
    tokens: list[str] = []
    for piece in spaced.split():
        tokens.extend(_split_piece(piece))
    return " ".join(tokens)


_tokenize_cached = lru_cache(maxsize=1 << 17)(_tokenize_uncached)


def _tokenize_line(words: list[str], escapes: bool) -> list[str]:
    tokens: list[str] = []
    for index, word in enumerate(words):
        following = words[index + 1] if index + 1 < len(words) else ""
        if word.lower() in ("no.", "nos.") and following[:1].isdigit():
            tokens.append(word)  # "no. 1": the period is part of the abbreviation
        else:
            tokens.extend(_tokenize_word(word).split())
    if escapes:
        inside = False
        for index, token in enumerate(tokens):
            if token in _ESCAPES:
                tokens[index] = _ESCAPES[token]
            elif token in ('"', "``", "''"):
                inside = _opens_quote(tokens, index, inside)
                tokens[index] = "``" if inside else "''"
    else:
        tokens = ['"' if token in ("``", "''") else token for token in tokens]
    return tokens


_CLOSING_CONTEXT = frozenset({".", ",", ";", ":", "!", "?", ")", "]", "}", "-rrb-", "-rsb-", "'", '"', "''"})


def _opens_quote(tokens: list[str], index: int, inside: bool) -> bool:
    """Whether the quote tokens[index] opens a quotation, given whether one is open (``inside``).

    `` and '' say so themselves; a bare " alternates, except that one at the start of a line
    opens and one before punctuation, another quote or the end of the line closes: that
    re-synchronizes after a quotation left open (fiction leaves them open across paragraphs).
    """
    token = tokens[index]
    if token in ("``", "''"):
        return token == "``"
    following = tokens[index + 1] if index + 1 < len(tokens) else ""
    if not following or following in _CLOSING_CONTEXT or following.startswith(("...", "--")):
        return False
    return index == 0 or not inside


def normalize(text: str, config: NormalizerConfig | None = None) -> str:
    """Raw text -> training style: ``Don't panic (CNN)`` -> ``do n't panic ( cnn )``.

    Unicode is NFC-composed, curly quotes and dashes become ASCII, runs of spaces collapse and
    blank lines disappear; the other line breaks are kept. Idempotent.
    """
    config = config or NormalizerConfig()
    text = unicodedata.normalize("NFC", text).translate(CHARACTER_MAP)
    if config.lowercase:
        text = text.lower()
    lines = []
    for line in text.splitlines():
        words = line.split()
        if config.ptb:
            words = _tokenize_line(words, config.ptb_escapes)
        if words:
            lines.append(" ".join(words))
    return "\n".join(lines)


# --- detokenization -------------------------------------------------------------------------------

_ATTACH_LEFT = frozenset({".", ",", ";", ":", "!", "?", "%", ")", "]", "}", "...", *_CLITICS})
_ATTACH_RIGHT = frozenset({"(", "[", "{", "$", "£", "€", "¥", "#"})
_JOINED_PAIRS = frozenset({("can", "not"), ("gon", "na"), ("got", "ta"), ("wan", "na"), ("lem", "me"),
                           ("gim", "me")})  # fmt: skip
_SENTENCE_END = re.compile(r"^(?:\.|[?!]+)$")  # . ! ?! !!! (not ...)
_CASED = {
    "i": "I", "cnn": "CNN", "u.s.": "U.S.", "u.n.": "U.N.", "u.k.": "U.K.", "uk": "UK", "usa": "USA",
    "eu": "EU", "fbi": "FBI", "cia": "CIA", "nasa": "NASA", "nato": "NATO", "bbc": "BBC", "nfl": "NFL",
    "nba": "NBA", "ceo": "CEO", "tv": "TV", "dna": "DNA", "gop": "GOP", "nhs": "NHS", "ap": "AP",
    "mr.": "Mr.", "mrs.": "Mrs.", "ms.": "Ms.", "dr.": "Dr.", "sen.": "Sen.", "gov.": "Gov.",
    "rep.": "Rep.", "gen.": "Gen.", "ireport": "iReport", "ireport.com": "iReport.com",
    "monday": "Monday", "tuesday": "Tuesday", "wednesday": "Wednesday", "thursday": "Thursday",
    "friday": "Friday", "saturday": "Saturday", "sunday": "Sunday", "january": "January",
    "february": "February", "april": "April", "june": "June", "july": "July", "august": "August",
    "september": "September", "october": "October", "november": "November", "december": "December",
}  # fmt: skip
_SINGLE_INITIALS = re.compile(r"^(?:[^\W\d_]\.)+$")
_LOWERCASE_INITIALS = frozenset({"a.m.", "p.m.", "e.g.", "i.e."})


def _cased(token: str) -> str:
    if token in _CASED:
        return _CASED[token]
    if _SINGLE_INITIALS.match(token) and token not in _LOWERCASE_INITIALS:
        return token.upper()  # d.c. -> D.C., george w. bush -> George W. Bush's middle initial
    return token


_RAW_WORD = re.compile(r"[^\W\d_][\w.&-]*[\w]|[^\W\d_]")
_AFTER_SENTENCE_END = re.compile(r"(?:^|[.!?:]['\")\]]?)\s*$")


def source_casing(raw_text: str) -> dict[str, str]:
    """lowercased word -> how the raw source writes it mid-sentence, when mostly not lowercase.

    The model reads and writes lowercased text; names it copies ("atlantic", "icc") get their
    case back from the document they came from. Sentence-initial words are not counted: "The"
    there says nothing about "the".
    """
    forms: dict[str, dict[str, int]] = {}
    for match in _RAW_WORD.finditer(raw_text):
        if _AFTER_SENTENCE_END.search(raw_text[max(0, match.start() - 3) : match.start()]):
            continue
        word = match.group()
        counts = forms.setdefault(word.lower(), {})
        counts[word] = counts.get(word, 0) + 1
    casing = {}
    for lower, counts in forms.items():
        best = max(counts, key=counts.get)
        if best != lower and counts[best] > counts.get(lower, 0):
            casing[lower] = best
    return casing


def _detokenize_line(tokens: list[str], casing: dict[str, str] | None = None) -> str:
    out: list[str] = []
    glue_next = True  # no space before the next token
    open_double = open_single = False
    sentence_start = True
    for index, token in enumerate(tokens):
        token = _UNESCAPES.get(token, token)
        previous = tokens[index - 1] if index else ""
        if token == "." and previous.endswith("."):
            continue  # "the u.s. ." -> "the U.S."
        ends_sentence = bool(_SENTENCE_END.match(token))
        left = (
            ends_sentence
            or token in _ATTACH_LEFT
            or (previous, token) in _JOINED_PAIRS
            or (token.startswith("..") and not token.strip("."))
        )
        right = token in _ATTACH_RIGHT
        if token in ('"', "``", "''"):
            open_double = _opens_quote(tokens, index, open_double)
            left, right, token = not open_double, open_double, '"'

        elif token == "'":
            possessive = (not open_single and previous.endswith("s") and previous not in _CLITICS
                          and index + 1 < len(tokens))  # fmt: skip
            left, right = open_single or possessive, not (open_single or possessive)
            open_single = not open_single and not possessive
        elif token in ("-", "/") and out and index + 1 < len(tokens):
            left = right = True  # miami - dade -> miami-dade, and / or -> and/or
        token = casing[token] if casing and token in casing else _cased(token)
        if sentence_start and token[:1].isalnum():
            token = token[:1].upper() + token[1:]
            sentence_start = False
        sentence_start = sentence_start or ends_sentence
        if out and not (left or glue_next):
            out.append(" ")
        out.append(token)
        glue_next = right
    return "".join(out)


def detokenize(text: str, casing: dict[str, str] | None = None) -> str:
    """Model output (normalized style) -> readable text.

    ``the u.s. said " it 's fine . "`` -> ``The U.S. said "it's fine."``: clitics, brackets,
    quotes, hyphens and punctuation are re-attached, sentences start with a capital and a small
    list restores the case of common acronyms, titles, days and months; ``casing`` (from
    ``source_casing`` of the raw input) restores the case of words the source writes cased.
    Line breaks are kept.
    """
    return "\n".join(_detokenize_line(line.split(), casing) for line in text.splitlines())
