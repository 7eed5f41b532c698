"""Per-task overhead of an Airflow architecture against ``subprocess``, from a
results directory's ``runs.jsonl`` (measured rounds only, medians):

    python scripts/airflow_overhead.py results/runs.jsonl [--arch airflow-local] [--base subprocess]
"""
from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict


def load(path: str) -> list[dict]:
    with open(path) as f:
        return [r for r in map(json.loads, f) if not r["warmup"] and r["outcome"] == "passed"]


def median(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs")
    parser.add_argument("--arch", default="airflow-local")
    parser.add_argument("--base", default="subprocess")
    args = parser.parse_args()
    runs = load(args.runs)
    by = defaultdict(list)
    for r in runs:
        by[(r["architecture"], r["workload"])].append(r)
    for (arch, workload), records in sorted(by.items()):
        tasks = len(records[0]["steps"])
        print(f"{arch:16} {workload:10} rounds={len(records)} tasks={tasks} "
              f"wall_s={median(r['wall_s'] for r in records)} overhead_s={median(r['overhead_s'] for r in records)} "
              f"startup_s={median(r['startup_s'] for r in records)}")
        steps = defaultdict(list)
        for r in records:
            for row in r["steps"]:
                steps[(row["step"], row["index"])].append(row)
        for (step, index), rows in steps.items():
            print(f"    {step}{'' if index is None else f'[{index}]':6} duration_s={median(x['duration_s'] for x in rows)} "
                  f"queue_delay_s={median(x.get('queue_delay_s') for x in rows)} "
                  f"launch_delay_s={median(x.get('launch_delay_s') for x in rows)}")
        gaps = defaultdict(list)
        for r in records:
            for edge, gap in r["gaps"].items():
                gaps[edge].append(gap)
        print("    gaps_s: " + ", ".join(f"{e}={median(g)}" for e, g in gaps.items()))
    for workload in sorted({w for _, w in by}):
        arch, base = by.get((args.arch, workload)), by.get((args.base, workload))
        if arch and base:
            tasks = len(arch[0]["steps"])
            extra = median(r["overhead_s"] for r in arch) - median(r["overhead_s"] for r in base)
            print(f"{workload}: {args.arch} overhead over {args.base} = {extra:.3f} s per run, "
                  f"{extra / tasks:.3f} s per task ({tasks} tasks)")


if __name__ == "__main__":
    main()
