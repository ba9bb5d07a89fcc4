"""The ``fitmm`` command line.

Exit codes: 0 success; 1 a suite or tune finished with failed trials; 2 bad input or a refused
request (one line on stderr, never a traceback); 3 training diverged (one line); 130 interrupted
with Ctrl-C (a training run keeps a resumable ``last.pt``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from fitmm.errors import InputError, TrainingDivergedError
from fitmm.interfaces.cli_data import add_data_commands
from fitmm.interfaces.cli_experiments import add_experiment_commands
from fitmm.interfaces.cli_serving import add_serving_commands, run_arguments

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr (and exit code 2), like every other error."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"fitmm: error: {message} (see {self.prog} --help)\n")


def _print_data_change(run) -> None:
    if run.data_changed:
        print(f"note: the dataset changed since this run was trained ({run.data_changed})", file=sys.stderr)


def _train(args: argparse.Namespace) -> int:
    from fitmm.training.runs import train

    overrides = args.set + ([f"preset={args.preset}"] if args.preset else [])
    try:
        result = train(
            args.model, args.dataset, args.out, seed=args.seed, epochs=args.epochs,
            config_file=args.config, overrides=overrides, device=args.device,
            resume=args.resume, overwrite=args.overwrite, progress=not args.quiet,
        )
    except KeyboardInterrupt:
        print(f"fitmm: interrupted; {args.out}/last.pt keeps the last checkpoint: continue with the same command "
              "and --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    test = result["test"]
    print(f"{result['model']} on {result['dataset']}: best epoch {result['best_epoch']} of "
          f"{result['epochs_run']}; test recall@20 {test['recall@20']:.4f}, ndcg@20 {test['ndcg@20']:.4f}; "
          f"written to {args.out}/result.json")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from fitmm.training.runs import load_run

    run = load_run(args.run, allow_data_change=args.allow_data_change)
    _print_data_change(run)
    print(json.dumps({args.split: run.evaluate(args.split).means()}, indent=2))
    return 0


def _recommend(args: argparse.Namespace) -> int:
    from fitmm.data import load_new_items
    from fitmm.data.new_users import read_new_users
    from fitmm.training.runs import load_run

    run = load_run(args.run, allow_data_change=args.allow_data_change)
    _print_data_change(run)
    new_items = None if args.new_items is None else load_new_items(args.new_items)
    options = {"internal_ids": args.ids == "internal", "new_items": new_items, "neighbours": args.neighbours}
    if args.new_users is None:
        n_users, n_short = run.write_recommendations(args.split, args.k, args.out, **options)
        whom = f"users of the {args.split} split"
    else:
        users = read_new_users(args.new_users)
        n_users, n_short = run.write_new_user_recommendations(users, args.k, args.out, **options)
        whom = f"new users of {args.new_users}"
    joined = "" if new_items is None else f", {new_items.count} new items ranked in"
    print(f"top-{args.k} recommendations for {n_users} {whom} ({args.ids} IDs) written to {args.out}{joined}")
    if n_short:
        print(f"note: {n_short} of them have fewer than {args.k} items left after their exclusions, so their lists "
              "are shorter")
    return 0


def _datasets(args: argparse.Namespace) -> int:
    from fitmm.data.builtin import DESCRIPTIONS

    for name, description in DESCRIPTIONS.items():
        print(f"{name}: {description}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from fitmm.data import load_dataset

    summary = load_dataset(args.dataset).summary()
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    inter = summary["interactions"]
    print(f"dataset      {summary['name']}")
    print(f"users        {summary['users']:,}")
    print(f"items        {summary['items']:,}")
    print(f"interactions {inter['total']:,} (train {inter['train']:,}, valid {inter['valid']:,}, "
          f"test {inter['test']:,})")
    print(f"density      {summary['density']:.5f}")
    print(f"evaluated    valid {summary['evaluated_users']['valid']:,} users, "
          f"test {summary['evaluated_users']['test']:,} users")
    if not summary["modalities"]:
        print("features     none (ID-only dataset)")
    for name, modality in summary["modalities"].items():
        print(f"{name:<12} {modality['width']}-d, content for {modality['items_with_content']:,} items "
              f"({modality['coverage']:.1%})")
    return 0


def _models(args: argparse.Namespace) -> int:
    from fitmm.models import MODELS
    from fitmm.training.settings import presets, settings_table

    if args.name is None:
        for name, cls in sorted(MODELS.items()):
            summary = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0]
            print(f"{name:<10} {summary}")
        return 0
    rows = settings_table(args.name)
    header = ("setting", "type", "default", "allowed", "description")
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(4)]
    print(f"{args.name}: presets {', '.join(presets(args.name)) or 'none'}; set with --set KEY=VALUE")
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths)) + "  " + row[4])
    return 0


def build_parser() -> argparse.ArgumentParser:
    from fitmm.data.dataset import NEW_ITEM_NEIGHBOURS

    parser = OneLineParser(prog="fitmm", description="FITMM and multimodal recommendation baselines.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)

    train = commands.add_parser("train", help="train one model; writes OUT/result.json and checkpoints")
    train.add_argument("--model", default="fitmm", help="model name (see `fitmm models`); default fitmm")
    train.add_argument("--dataset", default="ml100k", help="built-in dataset name or dataset folder path")
    train.add_argument("--out", required=True, help="run directory to write (one run per directory)")
    train.add_argument("--seed", type=int, help="random seed (default 999)")
    train.add_argument("--epochs", type=int, help="maximum number of epochs (at least 1)")
    train.add_argument("--preset", help="a named bundle of model settings, e.g. --preset paper for FITMM")
    train.add_argument("--config", help="YAML file of settings overriding the model's defaults")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one setting (repeatable), e.g. --set learning_rate=0.0005; "
                            "`fitmm models MODEL` lists them")
    train.add_argument("--device", help="cpu (default) or cuda")
    again = train.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the run in OUT from its last checkpoint (start it if OUT holds no run)")
    again.add_argument("--overwrite", action="store_true",
                       help="OUT holds another run: remove its run files first (other files are kept)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=_train)

    evaluate = commands.add_parser("evaluate", help="re-score a saved run's best checkpoint")
    run_arguments(evaluate)
    evaluate.add_argument("--split", choices=("valid", "test"), default="test")
    evaluate.set_defaults(func=_evaluate)

    recommend = commands.add_parser("recommend", help="write top-K recommendations of a saved run as CSV")
    run_arguments(recommend)
    recommend.add_argument("--k", type=int, default=20, help="list length (default 20)")
    whom = recommend.add_mutually_exclusive_group()
    whom.add_argument("--split", choices=("valid", "test"), default="test",
                      help="recommend for the evaluated users of this split (default test)")
    whom.add_argument("--new-users", metavar="FILE",
                      help="CSV with the columns user_id and item_id: users absent from training and the items "
                           "they interacted with, one row per item; each is folded in through the model's item "
                           "vectors (the mean of their items' vectors) and never gets those items back")
    recommend.add_argument("--out", required=True, help="CSV file: user_id,item_id,rank,score")
    recommend.add_argument("--ids", choices=("raw", "internal"), default="raw",
                           help="raw: the catalogue's own IDs (from the dataset's ID mappings; default); "
                                "internal: the numbers of the .inter file")
    recommend.add_argument("--new-items", metavar="DIR",
                           help="folder of content features (image_feat.npy, text_feat.npy, masks, "
                                "i_id_mapping.csv) of items not in the dataset, written by `fitmm data encode`; "
                                "they are ranked in by their content")
    recommend.add_argument("--neighbours", type=int, default=NEW_ITEM_NEIGHBOURS,
                           help=f"catalogue items a new item borrows its score from (default {NEW_ITEM_NEIGHBOURS})")
    recommend.set_defaults(func=_recommend)

    datasets = commands.add_parser("datasets", help="list the built-in datasets")
    datasets.set_defaults(func=_datasets)

    info = commands.add_parser("info", help="sizes, density and features of a dataset")
    info.add_argument("dataset", help="built-in dataset name or dataset folder path")
    info.add_argument("--json", action="store_true", help="print as JSON")
    info.set_defaults(func=_info)

    models = commands.add_parser("models", help="list the registered models, or one model's settings")
    models.add_argument("name", nargs="?", help="a model: print its settings (type, default, allowed values)")
    models.set_defaults(func=_models)

    add_serving_commands(commands)
    add_data_commands(commands)
    add_experiment_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = logging.StreamHandler()
    console.setLevel(logging.WARNING)
    console.setFormatter(logging.Formatter("fitmm: %(levelname)s: %(message)s"))
    logging.getLogger("fitmm").addHandler(console)
    try:
        return args.func(args)
    except InputError as error:
        print(f"fitmm: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except TrainingDivergedError as error:
        print(f"fitmm: error: {error}", file=sys.stderr)
        return EXIT_DIVERGED
    except KeyboardInterrupt:
        print("fitmm: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of our output went away (e.g. `fitmm models | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        logging.getLogger("fitmm").removeHandler(console)


if __name__ == "__main__":
    sys.exit(main())
