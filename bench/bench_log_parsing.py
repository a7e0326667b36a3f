"""Template mining accuracy on the Loghub-2k samples: grouping (GA) and parsing (PA) accuracy per system.

    python bench/bench_log_parsing.py [--data /work/shared/data/loghub] [--systems HDFS,BGL] [--no-drain3]

Reads ``<System>/<System>_2k.log_structured_corrected.csv`` (columns LineId, ..., Content, EventId,
EventTemplate) from ``--data`` and mines the ``Content`` column line by line, in file order, with one
global configuration (no per-system regexes or thresholds); then feeds the raw ``<System>_2k.log`` lines
through decode -> triage in batches of ``--batch`` (the "raw" columns: final ids, and ``GA enr`` for the
ids as written on enriched records). Scoring is ``streamer logs eval``'s (``streamer.logs.evaluate``).
The data stays where it is: the Loghub license is for research use, so nothing of it is copied into
this repository.

Metrics, as the Loghub papers define them:

* GA: a line is grouped correctly when the set of lines sharing its predicted template is exactly
  the set of lines sharing its true template. Grouping is read at the end, as batch parsers report.
* PA: the predicted template text equals the true one after whitespace runs and adjacent ``<*>``
  (``<*><*>``) are collapsed on both sides.
* churn: lines whose template id when they were mined differs from the final one (how often a
  streaming consumer sees an id that is later superseded).
* shuffled: lines that get the same final template id when the file is mined in a random order
  (the stable-id property), and the GA of that run.
* drain3: the same metrics for drain3 (sim_th 0.4, depth 4, its documented example masking), for
  reference; ``--no-drain3`` skips it.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamer.commands.logs import EVAL_BATCH, LabelledSample, load_samples
from streamer.logs.evaluate import evaluate_content, evaluate_raw, grouping_accuracy, parsing_accuracy
from streamer.logs.templates import TemplateMiner

SYSTEMS = ("Android", "Apache", "BGL", "Hadoop", "HDFS", "Linux", "OpenSSH", "Spark", "Windows")
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "loghub"


def load(data: Path, system: str) -> LabelledSample:
    return load_samples(data, systems=[system], text_col="Content", template_col="EventTemplate")[0]


def final_ids(lines: Sequence[str]) -> list[str]:
    miner = TemplateMiner()
    added = [miner.add(line).id for line in lines]
    return [t.id if (t := miner.resolve(a)) is not None else a for a in added]


def shuffled_ids(lines: Sequence[str], seed: int) -> list[str]:
    order = list(range(len(lines)))
    random.Random(seed).shuffle(order)
    miner = TemplateMiner()
    added: list[str] = [""] * len(lines)
    for i in order:
        added[i] = miner.add(lines[i]).id
    return [t.id if (t := miner.resolve(a)) is not None else a for a in added]


def drain3_miner() -> Callable[[Sequence[str]], tuple[list[str], list[str], float]] | None:
    try:
        from drain3 import TemplateMiner as Drain3
        from drain3.masking import MaskingInstruction
        from drain3.template_miner_config import TemplateMinerConfig
    except ImportError:
        return None
    # drain3's documented example masking (its examples/drain3.ini).
    patterns = [
        r"((?<=[^A-Za-z0-9])|^)(([0-9a-f]{2,}:){3,}([0-9a-f]{2,}))((?=[^A-Za-z0-9])|$)",
        r"((?<=[^A-Za-z0-9])|^)(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})((?=[^A-Za-z0-9])|$)",
        r"((?<=[^A-Za-z0-9])|^)([0-9a-f]{6,} ?){3,}((?=[^A-Za-z0-9])|$)",
        r"((?<=[^A-Za-z0-9])|^)([0-9A-F]{4} ?){4,}((?=[^A-Za-z0-9])|$)",
        r"((?<=[^A-Za-z0-9])|^)(0x[a-f0-9A-F]+)((?=[^A-Za-z0-9])|$)",
        r"((?<=[^A-Za-z0-9])|^)([\-\+]?\d+)((?=[^A-Za-z0-9])|$)",
    ]

    def run(lines: Sequence[str]) -> tuple[list[str], list[str], float]:
        config = TemplateMinerConfig()
        config.profiling_enabled = False
        config.drain_sim_th = 0.4
        config.drain_depth = 4
        config.masking_instructions = [MaskingInstruction(p, "*") for p in patterns]
        miner = Drain3(config=config)
        t0 = time.perf_counter()
        cluster_ids = [miner.add_log_message(line)["cluster_id"] for line in lines]
        elapsed = time.perf_counter() - t0
        clusters = {c.cluster_id: c.get_template() for c in miner.drain.clusters}
        return [str(c) for c in cluster_ids], [clusters[c] for c in cluster_ids], len(lines) / elapsed

    return run


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"Loghub 2k folder (default {DEFAULT_DATA})")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated systems (default: all nine)")
    ap.add_argument("--no-drain3", action="store_true", help="skip the drain3 reference")
    ap.add_argument("--seed", type=int, default=1, help="seed of the shuffled run (default 1)")
    ap.add_argument("--batch", type=int, default=EVAL_BATCH, help=f"batch of the raw run (default {EVAL_BATCH})")
    ap.add_argument("--json", type=Path, default=None, help="also write the table as JSON here")
    args = ap.parse_args(argv)
    record: dict[str, object] = {"systems": {}}

    drain3 = None if args.no_drain3 else drain3_miner()
    header = (
        f"{'system':<8} {'GA':>6} {'PA':>6} {'templates':>11} {'lines/s':>9} {'churn':>6} "
        f"{'same ids':>8} {'GA shuf':>7} | {'raw GA':>6} {'PA':>6} {'GA enr':>6} {'lines/s':>8}"
    )
    if drain3 is not None:
        header += f" | {'drain3 GA':>9} {'PA':>6} {'templates':>9} {'lines/s':>8}"
    print(header)
    print("-" * len(header))
    rows: list[list[float]] = []
    for system in [s.strip() for s in args.systems.split(",") if s.strip()]:
        sample = load(args.data, system)
        lines, truth = sample.texts, sample.templates
        c = evaluate_content(lines, truth)
        r = evaluate_raw(sample.raw or lines, truth, batch=args.batch, service=system)
        ids = final_ids(lines)
        shuffled = shuffled_ids(lines, args.seed)
        same = sum(a == b for a, b in zip(ids, shuffled, strict=True)) / len(lines)
        ga_shuffled = grouping_accuracy(shuffled, truth)
        found = f"{c.templates}/{c.true_templates}"
        line = (
            f"{system:<8} {c.ga:6.3f} {c.pa:6.3f} {found:>11} {c.lines_per_s:9.0f} {c.churn:6.3f} {same:8.3f} "
            f"{ga_shuffled:7.3f} | {r.ga:6.3f} {r.pa:6.3f} {r.ga_enriched or 0.0:6.3f} {r.lines_per_s:8.0f}"
        )
        row = [c.ga, c.pa, c.lines_per_s, c.churn, same, ga_shuffled, r.ga, r.pa, r.ga_enriched or 0.0, r.lines_per_s]
        if drain3 is not None:
            d_ids, d_texts, d_rate = drain3(lines)
            d_ga, d_pa = grouping_accuracy(d_ids, truth), parsing_accuracy(d_texts, truth)
            line += f" | {d_ga:9.3f} {d_pa:6.3f} {len(set(d_ids)):>4}/{len(set(truth)):<4} {d_rate:8.0f}"
            row += [d_ga, d_pa, d_rate]
        print(line)
        rows.append(row)
        entry = {"content": c.to_dict(), "raw": r.to_dict(), "same_ids_shuffled": same}
        record["systems"][system] = entry  # type: ignore[index]
    if rows:
        mean = [statistics.fmean(col) for col in zip(*rows, strict=True)]
        print("-" * len(header))
        line = (
            f"{'average':<8} {mean[0]:6.3f} {mean[1]:6.3f} {'':>11} {mean[2]:9.0f} {mean[3]:6.3f} "
            f"{mean[4]:8.3f} {mean[5]:7.3f} | {mean[6]:6.3f} {mean[7]:6.3f} {mean[8]:6.3f} {mean[9]:8.0f}"
        )
        if drain3 is not None:
            line += f" | {mean[10]:9.3f} {mean[11]:6.3f} {'':>9} {mean[12]:8.0f}"
        print(line)
        record["average"] = {
            "ga": mean[0], "pa": mean[1], "raw_ga": mean[6], "raw_pa": mean[7], "ga_enriched": mean[8],
        }  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
