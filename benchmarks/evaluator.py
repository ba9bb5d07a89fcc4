"""Time the full-ranking evaluator on ml100k and on the Baby interactions (all users, all items).

Scores are random (the evaluator's cost does not depend on where they come from). Reports the
median of several repeats, per dataset, and writes JSON.

    python benchmarks/evaluator.py [--repeats 5] [--out benchmarks/results/evaluator.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from fitmm.data import load_dataset
from fitmm.evaluation import evaluate

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def time_dataset(name_or_path, repeats: int) -> dict:
    data = load_dataset(name_or_path)
    users = data.evaluation_users("test")
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(data.n_users, data.n_items, generator=generator)
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        evaluate(lambda batch: scores[batch], users, data.test, [data.train])
        seconds.append(time.perf_counter() - started)
    return {
        "dataset": data.name, "users_evaluated": int(users.size), "items": data.n_items,
        "median_seconds": statistics.median(seconds), "seconds": seconds,
        "users_per_second": users.size / statistics.median(seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).with_name("results") / "evaluator.json"))
    args = parser.parse_args()
    results = [time_dataset("ml100k", args.repeats), time_dataset(SHARED / "baby", args.repeats)]
    report = {"benchmark": "evaluator", "torch_threads": torch.get_num_threads(),
              "machine": platform.processor() or platform.machine(), "results": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    for row in results:
        print(f"{row['dataset']}: {row['users_evaluated']} users × {row['items']} items, "
              f"median {row['median_seconds']:.3f} s ({row['users_per_second']:.0f} users/s)")


if __name__ == "__main__":
    main()
