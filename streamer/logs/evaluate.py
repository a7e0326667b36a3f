"""How well the miner groups labelled log lines: grouping and parsing accuracy as the Loghub papers define them.

Two ways in, both pure (the caller reads the files):

* ``evaluate_content``: the message part of each line (Loghub's ``Content`` column, header already cut)
  mined line by line with a fresh ``TemplateMiner``: the miner alone.
* ``evaluate_raw``: whole raw lines through the worker's own path, ``decode_logs`` then ``triage_logs``
  in batches of the worker's size, redaction included: what the product does. It scores the final ids
  (``ga``) and, as ``ga_enriched``, the ids as the worker writes them on enriched records: with ``hold``
  (``STREAMER_LOG_HOLD_BATCH``, on by default) each batch's records leave once the next batch is mined,
  resolved then. ``ga_enriched_held`` and ``ga_enriched_unheld`` are both settings side by side (one of
  them is ``ga_enriched``); ``ga_enriched_warm`` is ``ga_enriched`` on the second half of the lines only,
  once the first half has taught the miner the service's templates (what a worker that loaded the
  templates topic writes).

Metrics:

* GA: a line is grouped right when the set of lines sharing its predicted template is exactly the set
  sharing its true template;
* PA: the predicted template text equals the true one once whitespace runs and adjacent wildcards are
  collapsed on both sides; a kind mask (``<IP>``, ``<EMAIL>``) counts as a wildcard;
* churn: lines whose id when they were mined differs from their final one (superseded later).
"""

from __future__ import annotations

import re
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

from streamer.events import RawEvent, Source
from streamer.logs.decode import decode_logs
from streamer.logs.templates import MinerConfig, TemplateMiner
from streamer.logs.triage import LogTriageConfig, LogTriageState, triage_logs

__all__ = [
    "SystemScore",
    "average",
    "evaluate_content",
    "evaluate_raw",
    "grouping_accuracy",
    "normalise_template",
    "parsing_accuracy",
]

_SPACES: Final = re.compile(r"\s+")
_KIND_MASK: Final = re.compile(r"<[A-Z][A-Z_]*>")
_EVAL_T0_MS: Final = 1_700_000_000_000


#: The scores only raw runs have.
_ENRICHED: Final = ("ga_enriched", "ga_enriched_warm", "ga_enriched_held", "ga_enriched_unheld")


@dataclass(frozen=True, slots=True)
class SystemScore:
    """Scores of one labelled sample; ``ga_enriched`` only for raw runs."""

    lines: int
    ga: float
    pa: float
    templates: int
    true_templates: int
    lines_per_s: float
    churn: float
    ga_enriched: float | None = None
    ga_enriched_warm: float | None = None
    ga_enriched_held: float | None = None
    ga_enriched_unheld: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for name in _ENRICHED:
            if out[name] is None:
                del out[name]
        return out


def normalise_template(template: str) -> str:
    """Template text as compared for PA: one space between tokens, adjacent wildcards as one."""
    t = _KIND_MASK.sub("<*>", _SPACES.sub(" ", template.strip()))
    while "<*><*>" in t:
        t = t.replace("<*><*>", "<*>")
    return t


def grouping_accuracy(predicted: Sequence[str], truth: Sequence[str]) -> float:
    """Share of lines whose predicted group holds exactly the lines of their true group."""
    if not truth:
        return 0.0
    by_pred: dict[str, set[int]] = defaultdict(set)
    by_truth: dict[str, set[int]] = defaultdict(set)
    for i, (p, t) in enumerate(zip(predicted, truth, strict=True)):
        by_pred[p].add(i)
        by_truth[t].add(i)
    return sum(by_pred[p] == by_truth[t] for p, t in zip(predicted, truth, strict=True)) / len(truth)


def parsing_accuracy(predicted: Sequence[str], truth: Sequence[str]) -> float:
    """Share of lines whose predicted template text is the true one (after ``normalise_template``)."""
    if not truth:
        return 0.0
    cache: dict[str, str] = {}

    def norm(t: str) -> str:
        n = cache.get(t)
        if n is None:
            n = cache[t] = normalise_template(t)
        return n

    return sum(norm(p) == norm(t) for p, t in zip(predicted, truth, strict=True)) / len(truth)


def evaluate_content(lines: Sequence[str], truth: Sequence[str], config: MinerConfig | None = None) -> SystemScore:
    """Mine ``lines`` (messages without header) in order with one fresh miner and score the final templates."""
    miner = TemplateMiner(config)
    t0 = time.perf_counter()
    at_time = [miner.add(line).id for line in lines]
    elapsed = time.perf_counter() - t0
    final = [miner.resolve(t) for t in at_time]
    ids = [t.id if t is not None else a for t, a in zip(final, at_time, strict=True)]
    texts = [t.text if t is not None else "" for t in final]
    return SystemScore(
        lines=len(lines),
        ga=grouping_accuracy(ids, truth),
        pa=parsing_accuracy(texts, truth),
        templates=len(set(ids)),
        true_templates=len(set(truth)),
        lines_per_s=len(lines) / elapsed if elapsed > 0 else 0.0,
        churn=sum(a != b for a, b in zip(at_time, ids, strict=True)) / max(len(lines), 1),
    )


class _NoModel:
    def classify_templates(self, templates: Sequence[str]) -> Sequence[tuple[str, float]]:
        return [("unclassified", 0.0)] * len(templates)


def evaluate_raw(
    lines: Sequence[str],
    truth: Sequence[str],
    *,
    batch: int,
    config: LogTriageConfig | None = None,
    service: str = "eval",
    make_state: Callable[[], LogTriageState] | None = None,
    hold: bool = True,
) -> SystemScore:
    """Feed raw lines through ``decode_logs`` and ``triage_logs`` in batches of ``batch`` and score the ids.

    ``hold``: whether the worker holds each batch's enriched records for one batch (``ga_enriched`` scores
    the ids it writes either way). Lines the decoder rejects count as groups of their own (always wrong
    unless alone in their template).
    """
    state = make_state() if make_state is not None else LogTriageState(config)
    key = service.encode()
    raws = [
        RawEvent(line.encode("utf-8", "surrogateescape"), Source("eval", 0, i, _EVAL_T0_MS + i), key)
        for i, line in enumerate(lines)
    ]
    written: dict[int, str] = {}
    held: dict[int, str] = {}
    previous: list[int] = []
    t0 = time.perf_counter()
    for start in range(0, len(raws), max(batch, 1)):
        records, _failures = decode_logs(raws[start : start + batch])
        result = triage_logs(records, state, _NoModel())
        for offset in previous:  # the last batch's ids, resolved once this batch is mined
            t = state.miner.resolve(written[offset])
            held[offset] = t.id if t is not None else written[offset]
        previous = []
        for rec in result.enriched:
            written[rec["source"]["offset"]] = rec["template_id"]
            previous.append(rec["source"]["offset"])
    elapsed = time.perf_counter() - t0
    for offset in previous:  # the last batch leaves when the stream pauses, as it is
        held[offset] = written[offset]
    enriched_ids: list[str] = []
    held_ids: list[str] = []
    final_ids: list[str] = []
    texts: list[str] = []
    for i in range(len(raws)):
        tid = written.get(i)
        if tid is None:
            enriched_ids.append(f"undecoded:{i}")
            held_ids.append(f"undecoded:{i}")
            final_ids.append(f"undecoded:{i}")
            texts.append("")
            continue
        enriched_ids.append(tid)
        held_ids.append(held[i])
        t = state.miner.resolve(tid)
        final_ids.append(t.id if t is not None else tid)
        texts.append(t.text if t is not None else "")
    left_ids = held_ids if hold else enriched_ids
    return SystemScore(
        lines=len(lines),
        ga=grouping_accuracy(final_ids, truth),
        pa=parsing_accuracy(texts, truth),
        templates=len(set(final_ids)),
        true_templates=len(set(truth)),
        lines_per_s=len(lines) / elapsed if elapsed > 0 else 0.0,
        churn=sum(a != b for a, b in zip(enriched_ids, final_ids, strict=True)) / max(len(lines), 1),
        ga_enriched=grouping_accuracy(left_ids, truth),
        ga_enriched_warm=grouping_accuracy(left_ids[len(lines) // 2 :], truth[len(lines) // 2 :]),
        ga_enriched_held=grouping_accuracy(held_ids, truth),
        ga_enriched_unheld=grouping_accuracy(enriched_ids, truth),
    )


def average(scores: Sequence[SystemScore]) -> dict[str, float]:
    """Unweighted mean of every numeric score over systems (as the Loghub tables average)."""
    if not scores:
        return {}
    out: dict[str, float] = {}
    for name in ("ga", "pa", "lines_per_s", "churn", *_ENRICHED):
        values = [v for s in scores if (v := getattr(s, name)) is not None]
        if values:
            out[name] = statistics.fmean(values)
    return out
