"""The hybrid loop end to end on BANKING77-derived traffic: does learning from escalations pay off?

    python bench/eval_feedback_loop.py [--data /work/shared/data/banking77/train.csv] [--json out.json]

BANKING77's training file is read where it lies (never copied) and split per class, with a fixed seed,
into three disjoint parts:

  seed      a few examples per intent: the bundle a team starts with (plus the shipped priority and
            sentiment examples, which every ticket bundle needs);
  traffic   tickets the running system sees: triaged by the seed bundle; the escalated ones go to a
            "large model" that answers with the true label (``--llm-accuracy`` below 1 makes it err);
  held-out  tickets neither bundle has seen: both are scored on them.

The path is the production one without Kafka: tickets as raw records through ``TicketProcessor`` (from
``load_ticket_runtime``: decode, triage core, escalation policy), escalation records rendered into the
bridge's prompt and checked for personal data, the fake answer validated by ``parse_answer`` into an
``llm_response`` record, escalations and answers joined by ``join_feedback`` into the JSONL that
``streamer feedback export`` writes, and the next bundle built by ``build_bundle`` with that file as a
second ``--head intent=`` file. As a control, a third bundle gets as many traffic examples chosen at
random (labelled too), so the gain of learning from *escalated* tickets is told apart from the gain of
more data.

Tickets declare ``language: en`` (BANKING77 is English; short texts would otherwise be misdetected), so the
escalation reasons are the intent model's and the priority/sentiment rules'.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamer.bridge.answers import InvalidAnswer, parse_answer
from streamer.bridge.feedback import join_feedback, write_jsonl
from streamer.bridge.llm import Completion
from streamer.bridge.prompt import LabelSet, load_prompt, render, unredacted_pii
from streamer.bridge.records import Escalation, response_record
from streamer.defaults import data_dir
from streamer.events import RawEvent, Source
from streamer.models.build import HeadSpec, build_bundle
from streamer.models.bundle import load_bundle
from streamer.runtime import load_ticket_runtime
from streamer.settings import Settings
from streamer.topics import ESCALATIONS, TICKETS_ENRICHED

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "banking77" / "train.csv"
#: Escalation reasons that come from the intent head (the others, e.g. urgent_negative, do not).
INTENT_REASONS = frozenset({"low_confidence", "small_margin", "out_of_scope"})
SELECTIVE_TARGETS = (0.95, 0.97)
REPO = Path(__file__).resolve().parents[1]


def split_per_class(labels: Sequence[str], sizes: Sequence[int], seed: int) -> list[list[int]]:
    """Disjoint index lists, ``sizes[k]`` examples of every class in part ``k`` (fewer if a class runs out)."""
    rng = random.Random(seed)
    by_class: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    parts: list[list[int]] = [[] for _ in sizes]
    for label in sorted(by_class):
        idx = by_class[label]
        rng.shuffle(idx)
        start = 0
        for k, size in enumerate(sizes):
            parts[k].extend(idx[start : start + size])
            start += size
    for part in parts:
        rng.shuffle(part)
    return parts


def write_csv(path: Path, texts: Sequence[str], labels: Sequence[str]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(zip(texts, labels, strict=True))
    return path


def topics_dir_for_eval(tmp: Path) -> Path:
    """The repository's topics and schemas with routing rules reduced to a default: routes.yaml names the
    shipped intents, which BANKING77's labels are not."""
    out = tmp / "topics"
    out.mkdir()
    (out / "topics.yaml").symlink_to(REPO / "topics" / "topics.yaml")
    (out / "schemas").symlink_to(REPO / "topics" / "schemas")
    (out / "routes.yaml").write_text(
        "tickets:\n  rules: []\n  default: support.queue.general.v1\n",
        encoding="utf-8",
    )
    return out


def build(out: Path, version: str, intent_files: Sequence[Path]) -> Path:
    data = data_dir()
    heads = [
        HeadSpec("intent", tuple(intent_files)),
        HeadSpec("priority", (data / "priority.jsonl",)),
        HeadSpec("sentiment", (data / "sentiment.jsonl",)),
    ]
    return build_bundle(out, "banking77-loop", version, heads, force=True, progress=False)


def triage(
    settings: Settings, bundle_dir: Path, texts: Sequence[str], ids: Sequence[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Enriched and escalation records of ``texts``, through the worker's processor, in batches of 64."""
    bundle = load_bundle(bundle_dir, device="cpu", compute_type="int8")
    runtime = load_ticket_runtime(settings, bundle)
    enriched: list[dict[str, Any]] = []
    escalations: list[dict[str, Any]] = []
    for start in range(0, len(texts), 64):
        raws = []
        for offset in range(start, min(start + 64, len(texts))):
            ticket = {
                "id": ids[offset],
                "created_at": "2026-11-28T09:00:00Z",
                "channel": "chat",
                "language": "en",
                "body": texts[offset],
            }
            raws.append(RawEvent(value=orjson.dumps(ticket), source=Source("support.tickets.v1", 0, offset), key=None))
        result = runtime.processor(raws)
        for out in result.outputs:
            if out.topic == TICKETS_ENRICHED:
                enriched.append(dict(out.value))
            elif out.topic == ESCALATIONS:
                escalations.append(dict(out.value))
    return enriched, escalations


def score(enriched: Sequence[dict[str, Any]], truth: dict[str, str], llm_accuracy: float) -> dict[str, Any]:
    n = len(enriched)
    escalated = [r for r in enriched if r["triage"]["escalation"]["escalate"]]
    auto = [r for r in enriched if not r["triage"]["escalation"]["escalate"]]
    correct = sum(r["triage"]["intent"]["label"] == truth[r["id"]] for r in enriched)
    auto_correct = sum(r["triage"]["intent"]["label"] == truth[r["id"]] for r in auto)
    reasons = Counter(x["code"] for r in escalated for x in r["triage"]["escalation"]["reasons"])
    for_intent = [r for r in escalated if {x["code"] for x in r["triage"]["escalation"]["reasons"]} & INTENT_REASONS]
    return {
        "tickets": n,
        "escalation_rate": round(len(escalated) / n, 4),
        "intent_escalation_rate": round(len(for_intent) / n, 4),
        "small_model_accuracy": round(correct / n, 4),
        "auto_decided_accuracy": round(auto_correct / len(auto), 4) if auto else None,
        "system_accuracy": round((auto_correct + llm_accuracy * len(escalated)) / n, 4),
        "reasons": dict(reasons.most_common()),
        # the policy's threshold is fixed; these ask instead how much must escalate (by intent confidence
        # alone) for the small model's own decisions to reach a target accuracy
        "escalate_for_accuracy": {
            str(target): escalation_needed(enriched, truth, target) for target in SELECTIVE_TARGETS
        },
    }


def escalation_needed(enriched: Sequence[dict[str, Any]], truth: dict[str, str], target: float) -> float:
    """Smallest share of tickets to escalate, least confident first, so the rest are right ``target`` of the time."""
    ranked = sorted(enriched, key=lambda r: -r["triage"]["intent"]["confidence"])
    right = np.cumsum([r["triage"]["intent"]["label"] == truth[r["id"]] for r in ranked])
    kept = np.arange(1, len(ranked) + 1)
    ok = np.flatnonzero(right / kept >= target)
    return round(1.0 - (int(ok.max()) + 1) / len(ranked), 4) if len(ok) else 1.0


def large_model_answers(
    escalations: Sequence[dict[str, Any]], truth: dict[str, str], labels: LabelSet, accuracy: float, seed: int
) -> tuple[list[dict[str, Any]], Counter[str]]:
    """What the bridge would write for each escalation, with a "large model" that knows the answer."""
    template = load_prompt()
    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    responses: list[dict[str, Any]] = []
    for i, doc in enumerate(escalations):
        prompt = render(template, doc, labels)
        if unredacted_pii(doc, prompt):
            outcomes["unredacted_pii"] += 1
            continue
        intent = truth[doc["id"]]
        if rng.random() >= accuracy:
            intent = rng.choice([label for label in prompt.labels if label != intent])
        content = json.dumps({"intent": intent, "priority": "normal", "summary": "s", "suggested_reply": "r"})
        answer = parse_answer(content, prompt.labels, prompt.priorities)
        if isinstance(answer, InvalidAnswer):
            outcomes["invalid_answer"] += 1
            continue
        completion = Completion(content, "fake-large-model", 0, 0, 0.0, 1)
        raw = RawEvent(value=orjson.dumps(doc), source=Source("llm.escalations.v1", 0, i))
        record = response_record(
            Escalation(doc["id"], doc, raw),
            answer,
            completion,
            prompt_version=prompt.version,
            answered_at="2026-11-28T09:00:00Z",
            latency_ms=0.0,
        )
        responses.append(record)
        outcomes["answered"] += 1
    return responses, outcomes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--seed-per-class", type=int, default=10, help="seed bundle's examples per intent (10)")
    ap.add_argument("--traffic-per-class", type=int, default=40, help="traffic tickets per intent (40)")
    ap.add_argument("--test-per-class", type=int, default=20, help="held-out tickets per intent (20)")
    ap.add_argument("--llm-accuracy", type=float, default=1.0, help="chance the large model is right (1.0)")
    ap.add_argument("--no-control", action="store_true", help="skip the random-examples control bundle")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = ap.parse_args()

    started = time.perf_counter()
    with args.data.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    texts = [r["text"] for r in rows]
    labels = [r["category"] for r in rows]
    seed_idx, traffic_idx, test_idx = split_per_class(
        labels, (args.seed_per_class, args.traffic_per_class, args.test_per_class), args.seed
    )
    truth = {f"t{i}": labels[i] for i in range(len(rows))}
    report: dict[str, Any] = {
        "data": str(args.data),
        "split": {"seed": len(seed_idx), "traffic": len(traffic_idx), "held_out": len(test_idx)},
        "classes": len(set(labels)),
        "llm_accuracy": args.llm_accuracy,
    }
    print(f"split: {report['split']} over {report['classes']} intents", flush=True)

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        settings = Settings(topics_dir=topics_dir_for_eval(tmp), device="cpu")
        seed_csv = write_csv(tmp / "seed.csv", [texts[i] for i in seed_idx], [labels[i] for i in seed_idx])

        t0 = time.perf_counter()
        before_dir = build(tmp / "before", "before", [seed_csv])
        report["build_s"] = {"before": round(time.perf_counter() - t0, 1)}
        label_set = LabelSet.from_bundle(before_dir)

        t0 = time.perf_counter()
        _, escalations = triage(settings, before_dir, [texts[i] for i in traffic_idx], [f"t{i}" for i in traffic_idx])
        traffic_s = time.perf_counter() - t0
        responses, outcomes = large_model_answers(escalations, truth, label_set, args.llm_accuracy, args.seed)
        feedback = join_feedback(escalations, responses)
        feedback_file = tmp / "feedback.jsonl"
        write_jsonl(feedback, feedback_file)
        report["traffic"] = {
            "tickets": len(traffic_idx),
            "escalated": len(escalations),
            "escalation_rate": round(len(escalations) / len(traffic_idx), 4),
            "bridge_outcomes": dict(outcomes),
            "feedback_examples": len(feedback),
            "feedback_label_accuracy": round(
                float(np.mean([truth[r["id"]] == r["intent"] for r in responses])) if responses else 0.0, 4
            ),
            "triage_s": round(traffic_s, 1),
        }
        print(f"traffic: {report['traffic']}", flush=True)

        t0 = time.perf_counter()
        after_dir = build(tmp / "after", "after", [seed_csv, feedback_file])
        report["build_s"]["after"] = round(time.perf_counter() - t0, 1)

        bundles = {"before": before_dir, "after": after_dir}
        if not args.no_control:
            rng = random.Random(args.seed + 1)
            chosen = rng.sample(traffic_idx, min(len(feedback), len(traffic_idx)))
            control_csv = write_csv(tmp / "control.csv", [texts[i] for i in chosen], [labels[i] for i in chosen])
            t0 = time.perf_counter()
            bundles["control_random"] = build(tmp / "control", "control", [seed_csv, control_csv])
            report["build_s"]["control_random"] = round(time.perf_counter() - t0, 1)

        report["held_out"] = {}
        test_texts = [texts[i] for i in test_idx]
        test_ids = [f"t{i}" for i in test_idx]
        for name, bundle_dir in bundles.items():
            enriched, _ = triage(settings, bundle_dir, test_texts, test_ids)
            report["held_out"][name] = score(enriched, truth, args.llm_accuracy)
            head = json.loads((bundle_dir / "manifest.json").read_text())["heads"]["intent"]
            report["held_out"][name]["intent_head"] = {
                "labels": len(head["labels"]),
                "temperature": round(head["temperature"], 3),
                "calibration_split_accuracy": round(head.get("metrics", {}).get("accuracy", float("nan")), 4),
            }
            print(f"held-out, {name}: {report['held_out'][name]}", flush=True)

    report["total_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
