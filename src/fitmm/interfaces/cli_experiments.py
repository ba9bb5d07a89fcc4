"""The ``fitmm tune``, ``suite``, ``compare`` and ``report`` commands (logic in ``fitmm.experiments``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _seed_list(text: str) -> list[int]:
    try:
        return [int(seed) for seed in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of integers") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive integer")
    return value


def _tune(args: argparse.Namespace) -> int:
    from fitmm.experiments import LocalBackend, RayBackend, parse_grid, tune
    from fitmm.experiments.summary import LEGACY_WARNING, format_settings, format_statistic
    from fitmm.training.settings import parse_overrides

    backend = RayBackend(args.ray_address) if args.ray_address else LocalBackend(args.workers)
    run = tune(
        args.model, args.dataset, args.out, parse_grid(args.grid), args.seeds,
        random_count=args.random, search_seed=args.search_seed, settings=parse_overrides(args.set),
        epochs=args.epochs, backend=backend, legacy_test_selection=args.legacy_test_selection,
        progress=not args.quiet,
    )
    summary = run.summary
    print(f"{run.ran} trials run on {run.backend}, {run.skipped} finished earlier (skipped); "
          f"{len(summary['configurations'])} configurations × {len(args.seeds)} seeds")
    if args.legacy_test_selection:
        print(f"*** {LEGACY_WARNING} ***")
    chosen = summary["chosen"]
    if chosen is not None:
        split, metric = summary["selection"]["split"], summary["selection"]["metric"]
        print(f"chosen {chosen['id']} ({format_settings(chosen['settings'])}) by mean {split} {metric} "
              f"{format_statistic(chosen[split][metric])}; test recall@20 "
              f"{format_statistic(chosen['test']['recall@20'])}, ndcg@20 {format_statistic(chosen['test']['ndcg@20'])}")
    print(f"summary written to {args.out}/summary.md and {args.out}/summary.json")
    for trial in summary["failed_trials"]:
        print(f"fitmm: trial {trial['directory']} did not finish: {trial['error']}", file=sys.stderr)
    return 1 if summary["failed_trials"] else 0


def _compare(args: argparse.Namespace) -> int:
    from fitmm.experiments import compare_groups, format_comparison, load_group
    from fitmm.experiments.compare import COMPARED_METRICS

    metrics = (COMPARED_METRICS if args.metrics is None
               else tuple(metric.strip() for metric in args.metrics.split(",") if metric.strip()))
    comparison = compare_groups(load_group(args.run_a), load_group(args.run_b), metrics, args.alpha)
    print(json.dumps(comparison, indent=2, ensure_ascii=False) if args.json else format_comparison(comparison))
    return 0


def _report(args: argparse.Namespace) -> int:
    from fitmm.experiments import write_report

    print(f"report written to {write_report(args.directory, args.out)}")
    return 0


def _suite(args: argparse.Namespace) -> int:
    from fitmm.experiments import LocalBackend, RayBackend
    from fitmm.experiments.suite import load_suite, run_suite, suite_markdown

    suite = load_suite(args.file)
    backend = RayBackend(args.ray_address) if args.ray_address else LocalBackend(args.workers)
    summary = run_suite(suite, args.out, backend, progress=not args.quiet, train=not args.table_only)
    command = f"fitmm suite {args.file} --out {args.out}" + (f" --page {args.page}" if args.page else "")
    page = Path(args.page) if args.page else Path(args.out) / "summary.md"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(suite_markdown(summary, command))
    unfinished = [row["name"] for row in summary["rows"] if row["seeds_finished"] < len(summary["seeds"])]
    print(f"{suite.title}: {len(summary['rows'])} variants × {len(summary['seeds'])} seeds; table written to {page}"
          + (f"; unfinished: {', '.join(unfinished)}" if unfinished else ""))
    return 1 if unfinished else 0


def add_experiment_commands(subparsers) -> None:
    """Add ``tune``, ``suite``, ``compare`` and ``report`` to the ``fitmm`` command's subparsers."""
    tune = subparsers.add_parser(
        "tune", help="hyperparameter search over seeds, selected on validation; writes OUT/summary.{json,md}")
    tune.add_argument("--model", default="fitmm", help="model name (see `fitmm models`); default fitmm")
    tune.add_argument("--dataset", default="ml100k", help="built-in dataset name or dataset folder path")
    tune.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                      help="values searched for one setting (repeatable; the search is their Cartesian product)")
    tune.add_argument("--random", type=_positive_int, metavar="N",
                      help="train N configurations drawn from the grid instead of all of it")
    tune.add_argument("--search-seed", type=int, default=0,
                      help="seed of the --random draw (default 0); training seeds are --seeds")
    tune.add_argument("--seeds", type=_seed_list, default=[999], metavar="S1,S2,...",
                      help="every configuration is trained on each of these seeds (default 999)")
    tune.add_argument("--out", required=True, help="tune directory; trials go to OUT/trials/<config-id>-seed<seed>/")
    tune.add_argument("--epochs", type=_positive_int, help="maximum number of epochs of every trial")
    tune.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="fix one setting for every trial (repeatable)")
    where = tune.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_positive_int, default=1,
                       help="trials run at once, each in a new local process (default 1: in this process)")
    where.add_argument("--ray-address", metavar="auto|HOST:PORT",
                       help="run the trials as tasks on this Ray cluster (needs the extra fitmm[ray])")
    tune.add_argument("--legacy-test-selection", action="store_true",
                      help="choose by mean TEST recall@20 like MMRec's search; leaks test information, "
                           "and the outputs say so")
    tune.add_argument("--quiet", action="store_true", help="no progress bar")
    tune.set_defaults(func=_tune)

    compare = subparsers.add_parser(
        "compare", help="paired significance tests (t-test, Wilcoxon) of two runs on per-user test metrics")
    for name, side in (("run_a", "A"), ("run_b", "B")):
        compare.add_argument(name, metavar=f"RUN_{side}",
                             help=f"side {side}: a run directory, a tune directory (its chosen configuration's "
                                  "seeds), or run directories of several seeds as DIR1,DIR2,...")
    compare.add_argument("--metrics",
                         help="comma-separated per-user test metrics to compare (default: recall@20,ndcg@20)")
    compare.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    compare.add_argument("--json", action="store_true", help="print the comparison as JSON")
    compare.set_defaults(func=_compare)

    report = subparsers.add_parser("report", help="PNG plots and a Markdown page of a run or tune directory")
    report.add_argument("directory", metavar="RUN_DIR", help="run directory or tune directory")
    report.add_argument("--out", help="where to write report.md and the pictures (default RUN_DIR/report)")
    report.set_defaults(func=_report)

    suite = subparsers.add_parser(
        "suite", help="named model variants × seeds on one dataset as one table (results page, ablations)")
    suite.add_argument("file", help="suite YAML (see experiments/*.yaml)")
    suite.add_argument("--out", required=True, help="suite directory; trials go to OUT/trials/<variant>-seed<seed>/")
    suite.add_argument("--page", help="Markdown table to write (default OUT/summary.md)")
    where = suite.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_positive_int, default=1,
                       help="trials run at once, each in a new local process (default 1: in this process)")
    where.add_argument("--ray-address", metavar="auto|HOST:PORT", help="run the trials on this Ray cluster")
    suite.add_argument("--table-only", action="store_true",
                       help="train nothing: tabulate the trials finished so far (e.g. while the suite runs)")
    suite.add_argument("--quiet", action="store_true", help="no progress bar")
    suite.set_defaults(func=_suite)
