"""New users from a few items, on real data: how well the fold-in rule serves people the model never saw.

A tenth of ml100k's users (seeded choice) is held out of training entirely: their interactions are
removed from the dataset folder the models are trained on. Each held-out user is then given their
own training-split items as the seed (what a new user tells the service), and the fold-in rule
(``fitmm.retrieval.fold_in``: the mean of the seed items' vectors) ranks every other item; recall@20
is measured on their test items. The same users are ranked by popularity (training counts of the
reduced folder, seed items excluded) and by a random order (its expected recall), for LightGCN and
FITMM (authors preset), each trained with its defaults to early stopping.

    python experiments/new_users_ml100k.py [--out runs/new-users-ml100k] [--page docs/new_users.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import fitmm
from fitmm.data.dataset import TEST, TRAIN

HELD_OUT_SHARE = 0.1
MODELS = {"LightGCN": ("lightgcn", {}), "FITMM (authors)": ("fitmm", {"preset": "authors"})}
K = 20


def held_out_folder(out: Path) -> tuple[Path, np.ndarray]:
    """ml100k without a seeded tenth of its users; returns the folder and those users."""
    data = fitmm.load_dataset("ml100k")
    users = np.sort(np.random.default_rng(0).choice(data.n_users, size=round(HELD_OUT_SHARE * data.n_users),
                                                    replace=False))
    kept = ~np.isin(data.users, users)
    folder = out / "ml100k-without-new-users"
    folder.mkdir(parents=True, exist_ok=True)
    table = np.column_stack([data.users[kept], data.items[kept], data.labels[kept]])
    np.savetxt(folder / f"{folder.name}.inter", table, fmt="%d", delimiter="\t", header="userID\titemID\tx_label",
               comments="")
    for name, modality in data.modalities.items():
        np.save(folder / f"{name}_feat.npy", modality.features)
        np.save(folder / f"{name}_mask.npy", modality.mask)
    return folder, users


def recall(lists: list[list[int]], truth: list[set[int]]) -> float:
    return float(np.mean([len(set(ranked[:K]) & relevant) / len(relevant) for ranked, relevant in zip(lists, truth)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/new-users-ml100k", help="folder for the dataset and the runs")
    parser.add_argument("--page", default="docs/new_users.md", help="Markdown page to write")
    args = parser.parse_args()
    out = Path(args.out)
    folder, users = held_out_folder(out)
    full = fitmm.load_dataset("ml100k")
    measured = np.intersect1d(users, full.evaluation_users("test"))  # those with test items (39 of 943 have none)
    seeds = [full.items[(full.users == user) & (full.labels == TRAIN)] for user in measured]
    truth = [set(full.items[(full.users == user) & (full.labels == TEST)].tolist()) for user in measured]
    counts = np.bincount(fitmm.load_dataset(folder).train.indices, minlength=full.n_items).astype(float)
    popularity = []
    for seed in seeds:
        scores = counts.copy()
        scores[seed] = -np.inf
        popularity.append(np.argsort(-scores, kind="stable")[:K].tolist())
    rows = {"Popularity": recall(popularity, truth),
            "Random order (expected)": float(np.mean([K / (full.n_items - len(seed)) for seed in seeds]))}
    details = {}
    for label, (model, settings) in MODELS.items():
        directory = out / model
        if not (directory / "result.json").exists():
            fitmm.train(model, folder, directory, overrides=settings, resume=True, progress=False)
        run = fitmm.load_run(directory)
        lists = run.recommend(items=[seed.tolist() for seed in seeds], k=K, internal_ids=True)
        rows[f"{label}, fold-in"] = recall([ranked.items for ranked in lists], truth)
        details[label] = {"directory": str(directory), "best_epoch": run.result["best_epoch"],
                          "test_recall@20_known_users": run.result["test"]["recall@20"]}
    summary = {"held_out_users": int(len(users)), "measured_users": int(len(measured)), "seed_items_median": float(np.median([len(s) for s in seeds])),
               "test_items_median": float(np.median([len(t) for t in truth])), "recall@20": rows, "runs": details}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    lines = ["# New users from a few items (ml100k)", "",
             f"{len(users)} of ml100k's {full.n_users} users (a tenth, seeded) are held out of training entirely; "
             f"the {len(measured)} of them with test items are measured. Each is given their own training-split "
             "items as the seed (median "
             f"{summary['seed_items_median']:.0f} items); the fold-in rule ranks every other item by the mean "
             "inner product with the seed items' vectors. Recall@20 on their test items (median "
             f"{summary['test_items_median']:.0f}):", "",
             "| ranking | recall@20 |", "|---|---|"]
    lines += [f"| {name} | {value:.4f} |" for name, value in rows.items()]
    lines += ["", "For comparison, the same models' test recall@20 for the users they were trained on: "
              + "; ".join(f"{label} {info['test_recall@20_known_users']:.4f} (best epoch {info['best_epoch']})"
                          for label, info in details.items()) + ".", "",
              "Produced by `python experiments/new_users_ml100k.py`."]
    Path(args.page).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
