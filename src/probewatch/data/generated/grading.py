"""Grading a free-text answer against a gold entity, with aliases.

Text is compared word by word after folding: accents stripped (NFKD), case folded, every
run of non-alphanumerics a word break, and a leading "the" dropped from names. So "Paris.",
"paris", "The capital is PARIS!" all mention Paris; "São Paulo" matches "Sao Paulo"; and
"Parisian" does not match "Paris" (whole words only).

A response is graded from the entities it mentions:
- gold mentioned, no other candidate            -> "correct"
- another candidate mentioned, no gold          -> "wrong"
- both                                          -> "mixed" (ambiguous: "X, not Y" is too
  easy to misread either way)
- neither, with a refusal or hedge              -> "refused" (ambiguous)
- neither, open answer: a capitalized name after "is"/"was" -> "wrong" (an invented name)
- neither otherwise                             -> "no_answer" (ambiguous)
Candidates (other entities of the answer's kind) must start with a capital letter in the
response, so everyday words that are also city names ("nice", "mobile") do not count;
"Gulf of Oman"-style feature names do not name the country, nor does the tail of a longer
name ("New South Wales" is not Wales).
The question's own subject ("France" in "the capital of France") is never a candidate.
"""

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Verdict = Literal["correct", "wrong", "mixed", "refused", "no_answer"]
AMBIGUOUS: frozenset[str] = frozenset({"mixed", "refused", "no_answer"})

WORD = re.compile(r"\w+")
REFUSAL = re.compile(
    r"\b(i\s+(?:do\s+not|don'?t|cannot|can'?t)\s+(?:know|say|answer|provide|help)|not\s+sure|"
    r"i'?m\s+sorry|i\s+am\s+sorry|unable\s+to|no\s+information|not\s+aware|as\s+an\s+ai|"
    r"i\s+(?:won'?t|will\s+not))",
    re.IGNORECASE,
)
# A capitalized name (allowing "de", "la", hyphens, apostrophes) after "is"/"was":
# "The capital of X is Y." ("in Africa" is a place, not the answer).
OPEN_ANSWER = re.compile(
    r"\b(?:is|was)\s+(?:the\s+(?:city|town)\s+of\s+)?"
    r"([A-ZÀ-Ý][\w'’\-]*(?:\s+(?:(?:de|da|del|la|al|el|of|and)\s+)?[A-ZÀ-Ý][\w'’\-]*)*)"
)


def fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    # Letters NFKD does not decompose.
    return stripped.translate(str.maketrans("øØłŁđĐ", "oOlLdD"))


def words(text: str) -> tuple[str, ...]:
    """The folded words of `text`: the unit of comparison."""
    return tuple(w.casefold() for w in WORD.findall(fold(text)))


def name_key(name: str) -> tuple[str, ...]:
    """Words of a name with a leading article dropped ("The Hague" ~ "Hague")."""
    key = words(name)
    return key[1:] if len(key) > 1 and key[0] == "the" else key


def normalize(text: str) -> str:
    return " ".join(name_key(text))


@dataclass(frozen=True)
class Mention:
    start: int
    end: int
    key: tuple[str, ...]


def _tokens(text: str) -> list[tuple[str, int, int]]:
    # Folding can change lengths ("ß" -> "ss" is not NFKD, but ligatures are), so fold word
    # by word and keep the original offsets.
    return [
        (words(m.group())[0] if words(m.group()) else "", m.start(), m.end())
        for m in WORD.finditer(text)
    ]


def find_mentions(
    text: str, names: Iterable[tuple[str, ...]], capitalized: bool = False
) -> list[Mention]:
    """Every whole-word occurrence of any name (as folded word tuples), longest first at a
    position; with `capitalized`, only where the original text starts with a capital."""
    by_first: dict[str, list[tuple[str, ...]]] = {}
    for key in names:
        if key:
            by_first.setdefault(key[0], []).append(key)
    for keys in by_first.values():
        keys.sort(key=len, reverse=True)
    toks = _tokens(text)
    found: list[Mention] = []
    i = 0
    while i < len(toks):
        matched = None
        for key in by_first.get(toks[i][0], []):
            n = len(key)
            if tuple(t for t, _, _ in toks[i : i + n]) == key:
                matched = key
                break
        if matched is not None and (not capitalized or text[toks[i][1]].isupper()):
            found.append(Mention(toks[i][1], toks[i + len(matched) - 1][2], matched))
            i += len(matched)
        else:
            i += 1
    return found


@dataclass(frozen=True)
class Grade:
    verdict: Verdict
    span: tuple[int, int] | None  # characters of the graded entity in the response
    stated: str | None  # the entity the response states, as written

    @property
    def ambiguous(self) -> bool:
        return self.verdict in AMBIGUOUS


def grade(
    response: str,
    gold: Iterable[str],
    candidates: Iterable[tuple[str, ...]] = (),
    subject: Iterable[str] = (),
    open_answer: bool = False,
    capitalized: bool = True,
    not_answers: Iterable[tuple[str, ...]] = (),
) -> Grade:
    """Grade `response` against the `gold` names (aliases); see the module docstring.

    `candidates` are other answers of the same kind as folded word tuples (see `name_key`);
    `subject` names the thing asked about, which is never taken as an answer (unless it is
    the only gold name). `capitalized`: candidates count only where written with a capital.
    `not_answers`: names an open answer cannot be (a country or continent for a capital).
    """
    subject_keys = {name_key(s) for s in subject} - {()}
    gold_keys = {name_key(g) for g in gold} - {()}
    # "Australia is in Oceania": the subject's own name is not the answer "Australia".
    gold_keys = (gold_keys - subject_keys) or gold_keys
    gold_hits = find_mentions(response, gold_keys)
    blocked = gold_keys | subject_keys
    subject_hits = find_mentions(response, subject_keys)
    taken = [(m.start, m.end) for m in gold_hits + subject_hits]
    other_hits = [
        m
        for m in find_mentions(response, set(candidates) - blocked, capitalized=capitalized)
        if not any(m.start < end and start < m.end for start, end in taken)
        and not _names_a_feature(response, m)
        and not _inside_longer_name(response, m)
    ]
    if gold_hits and not other_hits:
        return _graded("correct", response, gold_hits[0])
    if other_hits and not gold_hits:
        return _graded("wrong", response, other_hits[0])
    if gold_hits:
        return Grade("mixed", None, None)
    if REFUSAL.search(response):
        return Grade("refused", None, None)
    if open_answer:
        for match in OPEN_ANSWER.finditer(response):
            key = name_key(match.group(1))
            rejected = subject_keys | set(not_answers)
            if key and key not in rejected and key[0] not in {"the", "a", "it", "i"}:
                return Grade("wrong", match.span(1), match.group(1))
    return Grade("no_answer", None, None)


# "the Gulf of Oman", "the Sea of Japan": a place named after a country, not the country.
FEATURES = frozenset({"gulf", "sea", "bay", "strait", "straits", "ocean", "coast", "river"})


def _names_a_feature(response: str, mention: Mention) -> bool:
    before = words(response[: mention.start])[-2:]
    return len(before) == 2 and before[1] == "of" and before[0] in FEATURES


PREVIOUS_WORD = re.compile(r"(\w+)\s+$")
SENTENCE_START = re.compile(r"(?:^|[.!?:]\s+)$")


def _inside_longer_name(response: str, mention: Mention) -> bool:
    """ "New South Wales" does not name Wales, nor "South America" America: a capitalized
    word right before the mention (not opening a sentence) makes it part of another name."""
    before = response[: mention.start]
    match = PREVIOUS_WORD.search(before)
    if match is None or not match.group(1)[0].isupper():
        return False
    return SENTENCE_START.search(before[: match.start()]) is None


def _graded(verdict: Verdict, response: str, mention: Mention) -> Grade:
    return Grade(verdict, (mention.start, mention.end), response[mention.start : mention.end])


CLAUSE_BREAK = re.compile(r"[,;:.!?]")
INFLECTIONS = ("", "s", "es", "ed", "d", "ing")
NEGATORS = frozenset({"not", "never", "no", "t", "nothing", "none", "neither", "nor", "without"})


def keyword_hits(text: str, phrases: Iterable[str], window: int = 4) -> tuple[int, int]:
    """(plain, negated) counts of whole-word phrase occurrences in `text`. An occurrence is
    negated when one of the `window` words before it, in the same clause (no , ; : . ! ?
    between), is a negator ("not", "never", "no", the "t" of "n't", ...): "has never been
    in an accident" negates "accident", "No, it had an accident" does not. The phrase's last
    word also matches with +s/+es/+ed/+d/+ing ("accident" matches "accidents")."""
    toks = _tokens(text)
    folded = [t for t, _, _ in toks]
    plain = negated = 0
    for phrase in phrases:
        key = words(phrase)
        if not key:
            continue
        last = {key[-1] + suffix for suffix in INFLECTIONS}
        for i in range(len(folded) - len(key) + 1):
            span = folded[i : i + len(key)]
            if tuple(span[:-1]) != key[:-1] or span[-1] not in last:
                continue
            start = toks[i][1]
            before = [
                t
                for t, _, end in toks[max(0, i - window) : i]
                if not CLAUSE_BREAK.search(text[end:start])
            ]
            if any(b in NEGATORS for b in before):
                negated += 1
            else:
                plain += 1
    return plain, negated
