"""Language identification for ticket text with py3langid's bundled (offline) naive-Bayes model.

py3langid over lingua-language-detector: on ticket-length texts it is 2-20x faster per text (about
10k texts/s on one core against lingua's 0.5k/s with all languages, 5k/s with seven), loads in under
half a second into about 100 MiB where lingua needs seconds and close to 1 GiB for all languages, and
with the candidates restricted to a desk's languages it was as accurate as lingua on the labelled
ticket sentences and short snippets in ``bench/bench_extract.py`` (41/41 each). Unrestricted, lingua
was slightly better (40/41 against 38/41; py3langid read short lines as Aragonese, Tagalog and
Luxembourgish), which is what the candidate restriction below is for.

Results are ISO 639-1 codes. The model also knows a few languages without a two-letter code and a
"no linguistic content" class; those are excluded from the default candidate set, so callers
always get a two-letter code or ``"und"``. Texts with fewer than ``MIN_WORDS`` words after removing
URLs, emails, placeholders and tokens with digits are ``("und", 0.0)``: a greeting or an order number
says nothing reliable about the language, and routing on a guess is worse than routing on "unknown".

Restricting the candidates to the languages a desk actually receives (``candidates=``) is the most
effective accuracy lever on short texts: it removes look-alike languages (``nn``/``no``/``da``,
``gl``/``pt``, ``an``/``es``) that otherwise win on a handful of words.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from functools import lru_cache
from typing import Any, Final

from py3langid.langid import MODEL_FILE, LanguageIdentifier

__all__ = ["MIN_WORDS", "UNDETERMINED", "detect_language", "detect_languages", "supported_languages"]

UNDETERMINED: Final = "und"
#: Fewer words than this (after cleaning) and the text is ``UNDETERMINED``.
MIN_WORDS: Final = 3

# Things that carry no language signal, or a misleading one (placeholders are upper-case English).
_NOISE_RE: Final = re.compile(
    r"\[[A-Z_]+_[0-9]+\]"  # redaction placeholders
    r"|\b(?:[a-z][a-z0-9+.-]*://|www\.)\S+"  # URLs
    r"|\S+@\S+"  # emails, handles
    r"|\S*[0-9_]\S*",  # ids, amounts, versions, ERROR_CODES
    re.I,
)
_WORD_RE: Final = re.compile(r"[^\W\d_]{2,}")
# Scripts written without spaces between words: count characters instead of words.
_UNSPACED_RE: Final = re.compile(r"[\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


@lru_cache(maxsize=1)
def _base_model() -> Any:
    """The full model, loaded once per process (about half a second); shared by all candidate sets."""
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def supported_languages() -> frozenset[str]:
    """ISO 639-1 codes the model can return."""
    labels: list[str] = list(_base_model().nb_classes)
    return frozenset(code for code in labels if len(code) == 2)


@lru_cache(maxsize=32)
def _identifier(candidates: frozenset[str] | None) -> Any:
    """An identifier restricted to ``candidates``; it shares the big feature tables with the base model."""
    base = _base_model()
    codes = supported_languages() if candidates is None else candidates
    if not codes:
        raise ValueError("no candidate languages")
    unknown = codes - supported_languages()
    if unknown:
        raise ValueError(f"not ISO 639-1 codes the model knows: {sorted(unknown)}")
    ident = LanguageIdentifier(
        base.nb_ptc, base.nb_pc, base.nb_classes, base.tk_nextmove, base.tk_output, norm_probs=True, tk_row=base.tk_row
    )
    ident.set_languages(sorted(codes))
    return ident


def _word_count(cleaned: str) -> int:
    unspaced = len(_UNSPACED_RE.findall(cleaned))
    return len(_WORD_RE.findall(cleaned)) + unspaced // 2


def _clean(text: str) -> str:
    return _NOISE_RE.sub(" ", text)


def detect_languages(
    texts: Sequence[str],
    candidates: Collection[str] | None = None,
    *,
    min_words: int = MIN_WORDS,
) -> list[tuple[str, float]]:
    """``(code, probability)`` per text, in order. The probability is normalised over the candidates."""
    ident = _identifier(frozenset(candidates) if candidates is not None else None)
    if len(ident.nb_classes) == 1:
        only: str = ident.nb_classes[0]
        return [(only, 1.0) if _word_count(_clean(t)) >= min_words else (UNDETERMINED, 0.0) for t in texts]
    results: list[tuple[str, float]] = []
    for text in texts:
        cleaned = _clean(text)
        if _word_count(cleaned) < min_words:
            results.append((UNDETERMINED, 0.0))
            continue
        code, prob = ident.classify(cleaned)
        results.append((str(code), float(prob)))
    return results


def detect_language(
    text: str, candidates: Collection[str] | None = None, *, min_words: int = MIN_WORDS
) -> tuple[str, float]:
    """``detect_languages`` for one text."""
    return detect_languages([text], candidates, min_words=min_words)[0]
