"""The ``fitmm`` command line. Bad input prints one line and exits with code 2."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from fitmm.errors import InputError
from fitmm.interfaces.cli_data import add_data_commands
from fitmm.interfaces.cli_experiments import add_experiment_commands

EXIT_BAD_INPUT = 2


def _train(args: argparse.Namespace) -> int:
    from fitmm.interfaces.api import train

    overrides = args.set + ([f"preset={args.preset}"] if args.preset else [])
    result = train(
        args.model, args.dataset, args.out, seed=args.seed, epochs=args.epochs,
        config_file=args.config, overrides=overrides, device=args.device,
        resume=args.resume, progress=not args.quiet,
    )
    test = result["test"]
    print(f"{result['model']} on {result['dataset']}: best epoch {result['best_epoch']} of "
          f"{result['epochs_run']}; test recall@20 {test['recall@20']:.4f}, ndcg@20 {test['ndcg@20']:.4f}; "
          f"written to {args.out}/result.json")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from fitmm.interfaces.api import load_run

    means = load_run(args.run).evaluate(args.split).means()
    print(json.dumps({args.split: means}, indent=2))
    return 0


def _recommend(args: argparse.Namespace) -> int:
    from fitmm.data import load_new_items
    from fitmm.interfaces.api import load_run

    run = load_run(args.run)
    new_items = None if args.new_items is None else load_new_items(args.new_items)
    n_users = run.write_recommendations(args.split, args.k, args.out, new_items=new_items, neighbours=args.neighbours)
    joined = "" if new_items is None else f", new items ranked in with IDs from {run.dataset.n_items}"
    print(f"top-{args.k} recommendations for {n_users} users of the {args.split} split written to {args.out}{joined}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from fitmm.interfaces.api import load_run
    from fitmm.interfaces.serving import make_server

    run = load_run(args.run)
    try:
        server = make_server(run, args.host, args.port)
    except OSError as error:
        raise InputError(f"cannot listen on {args.host}:{args.port}: {error.strerror}") from None
    host, port = server.server_address[:2]
    print(f"serving {run.result['model']} ({args.run}) on http://{host}:{port}/recommend?user=0&k=20; "
          f"Ctrl-C stops", flush=True)
    with server:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
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

    for name, cls in sorted(MODELS.items()):
        summary = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0]
        print(f"{name:<10} {summary}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from fitmm.data.dataset import NEW_ITEM_NEIGHBOURS

    parser = argparse.ArgumentParser(prog="fitmm", description="FITMM and multimodal recommendation baselines.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train one model; writes OUT/result.json and checkpoints")
    train.add_argument("--model", default="fitmm", help="model name (see `fitmm models`); default fitmm")
    train.add_argument("--dataset", default="ml100k", help="built-in dataset name or dataset folder path")
    train.add_argument("--out", required=True, help="run directory to write")
    train.add_argument("--seed", type=int, help="random seed (default 999)")
    train.add_argument("--epochs", type=int, help="maximum number of epochs")
    train.add_argument("--preset", help="a named bundle of model settings, e.g. --preset paper for FITMM")
    train.add_argument("--config", help="YAML file of settings overriding the model's defaults")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one setting (repeatable), e.g. --set learning_rate=0.0005")
    train.add_argument("--device", choices=("cpu", "cuda"), help="where to train (default cpu)")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run from OUT/last.pt")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=_train)

    evaluate = commands.add_parser("evaluate", help="re-score a saved run's best checkpoint")
    evaluate.add_argument("--run", required=True, help="run directory (written by fitmm train)")
    evaluate.add_argument("--split", choices=("valid", "test"), default="test")
    evaluate.set_defaults(func=_evaluate)

    recommend = commands.add_parser("recommend", help="write top-K recommendations of a saved run as CSV")
    recommend.add_argument("--run", required=True, help="run directory (written by fitmm train)")
    recommend.add_argument("--k", type=int, default=20, help="list length (default 20)")
    recommend.add_argument("--split", choices=("valid", "test"), default="test",
                           help="recommend for the evaluated users of this split")
    recommend.add_argument("--out", required=True, help="CSV file: user_id,item_id,rank,score")
    recommend.add_argument("--new-items", metavar="DIR",
                           help="folder of content features (image_feat.npy, text_feat.npy, masks) of items "
                                "not in the dataset; they are ranked in with IDs n_items + row")
    recommend.add_argument("--neighbours", type=int, default=NEW_ITEM_NEIGHBOURS,
                           help=f"catalogue items a new item borrows its score from (default {NEW_ITEM_NEIGHBOURS})")
    recommend.set_defaults(func=_recommend)

    serve = commands.add_parser("serve", help="answer top-K requests for a saved run over HTTP (JSON)")
    serve.add_argument("--run", required=True, help="run directory (written by fitmm train)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    serve.set_defaults(func=_serve)

    datasets = commands.add_parser("datasets", help="list the built-in datasets")
    datasets.set_defaults(func=_datasets)

    info = commands.add_parser("info", help="sizes, density and features of a dataset")
    info.add_argument("dataset", help="built-in dataset name or dataset folder path")
    info.add_argument("--json", action="store_true", help="print as JSON")
    info.set_defaults(func=_info)

    models = commands.add_parser("models", help="list the registered models")
    models.set_defaults(func=_models)

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


if __name__ == "__main__":
    sys.exit(main())
