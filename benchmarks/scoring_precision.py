"""Does scoring in bf16 change full-ranking metrics? The test metrics of saved runs scored in fp32 and
under bf16 autocast, and the largest difference of any metric at any K.

Evaluation, ``fitmm recommend`` and exports score in fp32 whatever precision a run was trained in;
this is the measurement behind that choice (they would follow the run's precision only if every
metric stayed within 1e-4 of fp32).

    python benchmarks/scoring_precision.py RUN_DIR [RUN_DIR ...] [--out JSON]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from fitmm.evaluation import evaluate, excluded_splits
from fitmm.training.runs import load_run

TOLERANCE = 1e-4


def metrics(run, bf16: bool) -> dict[str, float]:
    dataset, training = run.dataset, run.settings.training
    run.model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        score = run.model.scorer()
        result = evaluate(lambda users: score(users).float(), dataset.evaluation_users("test"), dataset.test,
                          [dataset.split_matrix(name) for name in excluded_splits("test", training.exclude_valid)],
                          batch_size=training.eval_batch_size)
    return result.means()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--out", default=str(Path(__file__).with_name("results") / "scoring_precision.json"))
    args = parser.parse_args()
    rows = []
    for directory in args.runs:
        run = load_run(directory)
        fp32, bf16 = metrics(run, False), metrics(run, True)
        worst = max(fp32, key=lambda name: abs(fp32[name] - bf16[name]))
        rows.append({"run": directory, "model": run.settings.model, "trained_in": run.settings.training.precision,
                     "fp32_recall@20": fp32["recall@20"], "bf16_recall@20": bf16["recall@20"],
                     "largest_difference": abs(fp32[worst] - bf16[worst]), "at": worst})
        print(f"{directory}: recall@20 {fp32['recall@20']:.5f} (fp32) vs {bf16['recall@20']:.5f} (bf16); largest "
              f"difference {rows[-1]['largest_difference']:.2e} at {worst} "
              f"({'within' if rows[-1]['largest_difference'] <= TOLERANCE else 'beyond'} {TOLERANCE:g})")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"tolerance": TOLERANCE, "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
