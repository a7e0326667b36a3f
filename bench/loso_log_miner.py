"""Leave-one-system-out check of every miner rule and threshold on the Loghub-2k samples.

    python bench/loso_log_miner.py [--data /work/shared/data/loghub] [--raw] [--json out.json]

Every knob of ``MinerConfig`` that a rule adds (``min_values``, ``prefix_min_values``, ``key_holes``,
``mask_literals``, ``collapse_wildcards``, ``mask_paths``,
``mask_host_ports``, ``mask_quoted_phrases``) spans a small grid. For each system S, the configuration
with the best average GA on the *other* systems is chosen (ties go to the configuration that changes the
fewest knobs of the shipped default) and scored on S: that is the figure a new user's unseen system would get if the
rules had been tuned without it. The in-sample column is the shipped default on every system. With
``--raw`` the same is done through the worker's decode -> triage path (slower).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamer.commands.logs import EVAL_BATCH, load_samples
from streamer.logs.evaluate import evaluate_content, evaluate_raw
from streamer.logs.templates import MinerConfig
from streamer.logs.triage import LogTriageConfig

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "loghub"
GRID: dict[str, Sequence[object]] = {
    "min_values": (2, 3, 4),
    "prefix_min_values": (0, 2, 3),
    "key_holes": (False, True),
    "mask_literals": (False, True),
    "collapse_wildcards": (False, True),
    "mask_paths": (False, True),
    "mask_host_ports": (False, True),
    "mask_quoted_phrases": (False, True),
}


def configs() -> list[MinerConfig]:
    names = list(GRID)
    return [MinerConfig(**dict(zip(names, values, strict=True))) for values in itertools.product(*GRID.values())]  # type: ignore[arg-type]


def distance(config: MinerConfig, default: MinerConfig) -> int:
    """Knobs that differ from the shipped default: ties go to the configuration that changes the fewest."""
    return sum(getattr(config, k) != getattr(default, k) for k in GRID)


def describe(config: MinerConfig) -> str:
    default = MinerConfig()
    diff = [f"{k}={getattr(config, k)}" for k in GRID if getattr(config, k) != getattr(default, k)]
    return ", ".join(diff) or "default"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--systems", default=None, help="comma-separated systems (default: every sample in --data)")
    ap.add_argument("--raw", action="store_true", help="score through decode -> triage instead of the Content column")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    systems = [s for s in args.systems.split(",") if s] if args.systems else None
    samples = load_samples(args.data, systems=systems, text_col="Content", template_col="EventTemplate")
    grid = configs()
    default = MinerConfig()
    if default not in grid:
        grid.insert(0, default)
    ga: dict[tuple[int, str], float] = {}
    for ci, config in enumerate(grid):
        for s in samples:
            if args.raw:
                lines = s.raw or s.texts
                score = evaluate_raw(lines, s.templates, batch=EVAL_BATCH, config=LogTriageConfig(miner=config))
            else:
                score = evaluate_content(s.texts, s.templates, config)
            ga[(ci, s.name)] = score.ga
    d = grid.index(default)
    names = [s.name for s in samples]
    print(f"{len(grid)} configurations x {len(names)} systems, {'raw' if args.raw else 'Content'} mode")
    print(f"{'held out':<9} {'in-sample GA':>12} {'LOSO GA':>8}  chosen on the other systems")
    rows = []
    for held in names:
        others = [n for n in names if n != held]

        def mean_on_others(ci: int, others: list[str] = others) -> float:
            return statistics.fmean(ga[(ci, n)] for n in others)

        best = max(range(len(grid)), key=lambda ci: (round(mean_on_others(ci), 6), -distance(grid[ci], default), -ci))
        rows.append(
            {"system": held, "in_sample": ga[(d, held)], "loso": ga[(best, held)], "chosen": describe(grid[best])}
        )
        print(f"{held:<9} {ga[(d, held)]:12.3f} {ga[(best, held)]:8.3f}  {describe(grid[best])}")
    in_sample = statistics.fmean(r["in_sample"] for r in rows)  # type: ignore[misc]
    loso = statistics.fmean(r["loso"] for r in rows)  # type: ignore[misc]
    print(f"{'average':<9} {in_sample:12.3f} {loso:8.3f}")
    overall = max(
        range(len(grid)), key=lambda ci: (round(statistics.fmean(ga[(ci, n)] for n in names), 6), ci == d, -ci)
    )
    print(
        f"best on all systems: {describe(grid[overall])} (GA {statistics.fmean(ga[(overall, n)] for n in names):.3f})"
    )
    print("each rule alone against the default (average GA over the systems):")
    for knob, values in GRID.items():
        cells = []
        for v in values:
            ci = grid.index(dataclasses.replace(default, **{knob: v}))
            cells.append(f"{v}: {statistics.fmean(ga[(ci, n)] for n in names):.3f}")
        print(f"  {knob:<20} " + "  ".join(cells))
    if args.json:
        doc = {"rows": rows, "in_sample": in_sample, "loso": loso, "grid": {k: list(v) for k, v in GRID.items()}}
        args.json.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
