"""A shadow bundle on the real broker: the shadow topic fills, and the agreement metric equals a count made
from the records themselves."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections import Counter
from pathlib import Path

import orjson
import pytest
from harness.fixtures import TopicFactory, WorkerFactory
from harness.kafka import REPO, Topics, all_ids
from harness.processes import StreamerProcess

from streamer.demo import demo_tickets
from streamer.pipeline.shadow import shadow_topic
from streamer.topics import SchemaRegistry

pytestmark = pytest.mark.kafka

REGISTRY = SchemaRegistry(REPO / "topics" / "schemas")
SHADOW_VERSION = f"shadow-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def shadow_bundle(test_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test bundle with another version, a strong neighbour vote and a 30% budget: same encoder, so
    the shadow reuses the live embeddings, and decisions that differ on some tickets."""
    out = tmp_path_factory.mktemp("shadow") / "bundle"
    shutil.copytree(test_bundle, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["version"] = SHADOW_VERSION
    intent = manifest["heads"]["intent"]
    intent["knn_weight"] = 0.9
    intent["escalation"]["rate"] = 0.3
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.fixture(scope="module")
def setup(
    module_topic_factory: TopicFactory, module_worker_factory: WorkerFactory, shadow_bundle: Path
) -> tuple[Topics, StreamerProcess]:
    cluster = module_topic_factory(label="shadow")
    worker = module_worker_factory(
        cluster,
        group=f"test-shadow-{uuid.uuid4().hex[:8]}",
        metrics=True,
        env={"STREAMER_SHADOW_BUNDLE_DIR": str(shadow_bundle), "STREAMER_MAX_BATCH": "16"},
    )
    return cluster, worker


def _shadow_counts(worker: StreamerProcess) -> Counter[tuple[str, str, str]]:
    counts: Counter[tuple[str, str, str]] = Counter()
    for (name, labels), value in worker.metrics().items():
        if name == "streamer_shadow_decisions_total":
            label = dict(labels)
            counts[(label["head"], label["label"], label["agreement"])] += int(value)
    return counts


def test_shadow_topic_fills_and_agreement_metric_matches_the_records(
    setup: tuple[Topics, StreamerProcess],
) -> None:
    cluster, worker = setup
    tickets = list(demo_tickets(80, seed=11))
    for t in tickets:
        t["id"] = f"{t['id']}-{uuid.uuid4().hex[:4]}"
    ids = {t["id"] for t in tickets}

    cluster.produce("support.tickets.v1", [(t["id"].encode(), orjson.dumps(t)) for t in tickets])
    # The worker creates the shadow topic as it starts: the read waits for it.
    live = {
        r["id"]: r
        for r in cluster.docs("support.tickets.enriched.v1", until=all_ids(ids), match=lambda v: v["id"] in ids)
    }
    shadow = {
        r["id"]: r
        for r in cluster.docs(shadow_topic(SHADOW_VERSION), until=all_ids(ids), match=lambda v: v["id"] in ids)
    }
    assert worker.alive, "worker died"
    assert set(live) == ids and set(shadow) == ids
    expected: Counter[tuple[str, str, str]] = Counter()
    for tid in ids:
        a, b = live[tid], shadow[tid]
        assert REGISTRY.errors("enriched_ticket.v1.json", b) == []
        assert b["model"]["version"] == SHADOW_VERSION and a["model"]["version"] != SHADOW_VERSION
        for head in ("intent", "priority", "sentiment"):
            la, lb = a["triage"][head]["label"], b["triage"][head]["label"]
            expected[(head, la, "agree" if la == lb else "disagree")] += 1
        ea, eb = a["triage"]["escalation"]["escalate"], b["triage"]["escalation"]["escalate"]
        expected[("escalate", str(ea).lower(), "agree" if ea == eb else "disagree")] += 1
    # the shadow differs somewhere (30% budget vs the live one), else this test would prove little
    assert any(k[2] == "disagree" for k in expected) and any(k[2] == "agree" for k in expected)
    deadline = time.monotonic() + 30
    got = _shadow_counts(worker)
    while sum(got.values()) < sum(expected.values()) and time.monotonic() < deadline:
        time.sleep(0.5)  # metrics count a batch once its outputs are acknowledged
        got = _shadow_counts(worker)
    assert got == expected
