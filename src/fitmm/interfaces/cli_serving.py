"""``fitmm export`` (a run's vectors → an export folder) and ``fitmm serve`` (HTTP, from an export or a run)."""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
from pathlib import Path

from fitmm.errors import InputError, MissingExtraError

_SERVE_EXTRA = "fitmm serve needs the optional extra: pip install 'fitmm[serve]'"


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not a positive {kind.__name__}")
        return value

    return parse


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {text!r} is not a number between 1 and 65535")
    return port


def run_arguments(command: argparse.ArgumentParser, required: bool = True) -> None:
    """``--run DIR`` and ``--allow-data-change``, as every command that loads a run takes them."""
    command.add_argument("--run", required=required, help="run directory (written by fitmm train)")
    command.add_argument("--allow-data-change", action="store_true",
                         help="use the run although its dataset changed since training (the output says so)")


def _hnsw(args: argparse.Namespace) -> dict | None:
    if args.index == "exact":
        return None
    return {"M": args.hnsw_m, "ef_construction": args.hnsw_ef_construction, "ef_search": args.hnsw_ef_search}


def _export(args: argparse.Namespace) -> int:
    from fitmm.data import load_new_items
    from fitmm.serving.export import export_run
    from fitmm.training.runs import load_run

    run = load_run(args.run, allow_data_change=args.allow_data_change)
    new_items = None if args.new_items is None else load_new_items(args.new_items)
    manifest = export_run(run, args.out, ann=_hnsw(args), new_items=new_items, neighbours=args.neighbours)
    ann = manifest["ann"]
    recall = "" if ann is None else f"; HNSW recall@20 against exact ranking {ann['recall@20_vs_exact']:.4f}"
    joined = "" if new_items is None else f" ({new_items.count:,} of them new, placed by their content)"
    print(f"exported {manifest['model']}: {manifest['users']:,} users and {manifest['items']:,} items{joined}, "
          f"{manifest['dim']}-d vectors, to {args.out}{recall}")
    return 0


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or one line saying why not."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
    except (OSError, OverflowError) as error:
        raise InputError(f"cannot listen on {host}:{port}: {getattr(error, 'strerror', None) or error}") from None
    listener.set_inheritable(True)
    return listener


def _serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn
        from uvicorn.supervisors import Multiprocess

        from fitmm.serving.app import CONFIG_VARIABLE, Limits, ServeConfig, create_app
    except ImportError:
        raise MissingExtraError(_SERVE_EXTRA) from None
    if (args.run is None) == (args.export is None):
        raise InputError("give --run DIR (export it on the fly) or --export EXPORT")
    limits = Limits(args.max_users, args.max_k, args.max_body_bytes, args.timeout)
    with tempfile.TemporaryDirectory(prefix="fitmm-serve-") as scratch:
        export = args.export
        if args.run is not None:
            from fitmm.serving import DEFAULT_HNSW
            from fitmm.serving.export import export_run
            from fitmm.training.runs import load_run

            run = load_run(args.run, allow_data_change=args.allow_data_change)
            export = str(Path(scratch) / "export")
            export_run(run, export, ann=DEFAULT_HNSW if args.index == "ann" else None)
        config = ServeConfig(str(Path(export).resolve()), args.index, limits)
        app = create_app(config)  # loads and checks the export before anything listens
        listener = _bind(args.host, args.port)
        host, port = listener.getsockname()[:2]
        model = app.state.service.description()["model"]
        print(f"serving {model} from {config.export} ({args.index} index, {args.workers} worker"
              f"{'s' if args.workers > 1 else ''}) on http://{host}:{port}/ — try /recommend?user=ID&k=20, /docs; "
              "Ctrl-C stops", flush=True)
        # the server gets the listening socket itself (uvicorn's fd= would take it for a Unix socket and
        # leave Nagle's algorithm on, which stalls every response by the peer's delayed ACK)
        try:
            if args.workers == 1:
                uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[listener])
            else:
                os.environ[CONFIG_VARIABLE] = config.to_json()
                metrics_dir = Path(scratch) / "metrics"
                metrics_dir.mkdir()
                os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
                settings = uvicorn.Config("fitmm.serving.app:create_app", factory=True, workers=args.workers,
                                          log_level="warning", access_log=False)
                Multiprocess(settings, sockets=[listener]).run()
        except KeyboardInterrupt:  # uvicorn shuts down gracefully on Ctrl-C, then passes the signal on
            pass
    print("server stopped", file=sys.stderr)
    return 0


def add_serving_commands(subparsers) -> None:
    """Add ``export`` and ``serve`` to the ``fitmm`` command's subparsers."""
    from fitmm.data.dataset import NEW_ITEM_NEIGHBOURS
    from fitmm.serving import DEFAULT_HNSW

    export = subparsers.add_parser(
        "export", help="write a run's user and item vectors, IDs and exclusions (and ANN parameters) to a folder",
        description="Write what serving needs, as plain files: user and item vectors whose inner product is the "
                    "model's score, the raw IDs, each user's training items, and a manifest with the dataset "
                    "fingerprint and the HNSW parameters (with the index's recall against exact ranking).")
    run_arguments(export)
    export.add_argument("--out", required=True, help="export folder (new, empty, or an earlier export)")
    export.add_argument("--new-items", metavar="DIR",
                        help="content features of items without interactions (written by `fitmm data encode`): "
                             "exported after the catalogue, each scored by its content neighbours")
    export.add_argument("--neighbours", type=_positive(int), default=NEW_ITEM_NEIGHBOURS,
                        help=f"catalogue items a new item borrows from, per modality (default {NEW_ITEM_NEIGHBOURS})")
    export.add_argument("--index", choices=("hnsw", "exact"), default="hnsw",
                        help="hnsw (default): record HNSW parameters and measure their recall; exact: none")
    export.add_argument("--hnsw-m", type=_positive(int), default=DEFAULT_HNSW["M"],
                        help=f"HNSW links per node (default {DEFAULT_HNSW['M']})")
    export.add_argument("--hnsw-ef-construction", type=_positive(int), default=DEFAULT_HNSW["ef_construction"],
                        help=f"HNSW build breadth (default {DEFAULT_HNSW['ef_construction']})")
    export.add_argument("--hnsw-ef-search", type=_positive(int), default=DEFAULT_HNSW["ef_search"],
                        help=f"HNSW search breadth (default {DEFAULT_HNSW['ef_search']})")
    export.set_defaults(func=_export)

    serve = subparsers.add_parser(
        "serve", help="answer top-K requests over HTTP (JSON; OpenAPI at /docs, Prometheus at /metrics)",
        description="Serve recommendations from an export (no model code loaded) or from a run (exported on the "
                    "fly). Needs the extra fitmm[serve].")
    run_arguments(serve, required=False)
    serve.add_argument("--export", help="export folder written by fitmm export")
    serve.add_argument("--index", choices=("exact", "ann"), default="exact",
                       help="exact (default): score every item; ann: FAISS HNSW with the export's parameters")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1; anything else exposes the server)")
    serve.add_argument("--port", type=_port, default=8000, help="port, 1-65535 (default 8000)")
    serve.add_argument("--workers", type=_positive(int), default=1,
                       help="server processes sharing the memory-mapped vectors (default 1)")
    limits = serve.add_argument_group("limits of one request")
    limits.add_argument("--max-users", type=_positive(int), default=1000, help="users per request (default 1000)")
    limits.add_argument("--max-k", type=_positive(int), default=1000, help="list length (default 1000)")
    limits.add_argument("--max-body-bytes", type=_positive(int), default=1 << 20,
                        help="POST body size (default 1 MiB)")
    limits.add_argument("--timeout", type=_positive(float), default=10.0,
                        help="seconds to answer before 503 (default 10)")
    serve.set_defaults(func=_serve)
