"""Load test of `fitmm serve` on this machine's loopback interface (bounded in requests and time).

Starts the server on a free loopback port from an export, then:

1. ``--clients`` concurrent keep-alive clients ask ``GET /recommend?user=U&k=20`` for random users
   until ``--requests`` requests are answered or ``--seconds`` pass;
2. one client sends ``--batch-requests`` times a ``POST /recommend`` for ``--batch-users`` users at
   k=20, one after another.

For each phase: requests per second, latency p50/p95/p99, errors (a status other than 200, or a
broken connection); and the server's resident memory (all its processes) before and after. The
clients are a minimal asyncio HTTP/1.1 client on the same machine, so client and server share the
cores. ``--url`` measures a server that is already running instead (e.g. an older version), which
must answer the same GET; ``--user-ids`` then names the IDs to ask for.

    python benchmarks/serving.py --export EXPORT [--index exact|ann] [--workers 1] [--clients 16]
                                 [--requests 20000] [--seconds 60] [--out JSON]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

RESULTS = Path(__file__).with_name("results")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def process_tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants, in MB (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        pending += children.get(current, [])
        try:
            status = (Path("/proc") / str(current) / "status").read_text()
        except OSError:
            continue
        total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")) / 1024
    return total


async def _exchange(host: str, port: int, connection, request: bytes):
    """Send one request on ``connection`` (reader, writer; reopened when None or closed); returns
    (status, connection to reuse or None)."""
    if connection is None:
        connection = await asyncio.open_connection(host, port)
    reader, writer = connection
    writer.write(request)
    await writer.drain()
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed")
    version, status = status_line.split()[:2]
    length, close = 0, version == b"HTTP/1.0"
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        elif name.strip().lower() == b"connection" and value.strip().lower() == b"close":
            close = True
    if length:
        await reader.readexactly(length)
    elif close:
        await reader.read()
    if close:
        writer.close()
        connection = None
    return int(status), connection


async def _load(host: str, port: int, requests: list[bytes], clients: int, seconds: float) -> dict:
    queue = iter(requests)
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal errors
        connection = None
        for request in queue:
            if time.perf_counter() > deadline:
                return
            started = time.perf_counter()
            try:
                status, connection = await _exchange(host, port, connection, request)
            except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError):
                errors += 1
                connection = None
                continue
            latencies.append(time.perf_counter() - started)
            errors += status != 200

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)

    def percentile(share: float) -> float:
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000 if ordered else float("nan")

    return {"requests": len(latencies), "errors": errors, "seconds": elapsed,
            "requests_per_second": len(latencies) / elapsed, "p50_ms": percentile(0.50),
            "p95_ms": percentile(0.95), "p99_ms": percentile(0.99),
            "mean_ms": statistics.fmean(latencies) * 1000 if latencies else float("nan")}


def _get(path: str, host: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


def _post(path: str, host: str, body: dict) -> bytes:
    payload = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload


def _wait(url: str, process: subprocess.Popen | None) -> None:
    for _ in range(600):
        if process is not None and process.poll() is not None:
            raise SystemExit(f"the server exited: {process.stderr.read()}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--export", help="export folder to serve (fitmm export)")
    source.add_argument("--url", help="a server already running, e.g. http://127.0.0.1:8000")
    parser.add_argument("--user-ids", help="with --url: comma-separated user IDs to ask for")
    parser.add_argument("--index", choices=("exact", "ann"), default="exact")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=20000, help="at most this many single-user requests")
    parser.add_argument("--seconds", type=float, default=60.0, help="and at most this long")
    parser.add_argument("--batch-users", type=int, default=1000)
    parser.add_argument("--batch-requests", type=int, default=20)
    parser.add_argument("--label", default="", help="a name for this measurement in the JSON")
    parser.add_argument("--out", default=str(RESULTS / "serving.json"))
    args = parser.parse_args()

    process = None
    if args.export:
        port = free_port()
        process = subprocess.Popen([sys.executable, "-m", "fitmm", "serve", "--export", args.export, "--index",
                                    args.index, "--workers", str(args.workers), "--port", str(port)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        base = f"http://127.0.0.1:{port}"
        _wait(f"{base}/ready", process)
        user_ids = (Path(args.export) / "user_ids.txt").read_text().split()
    else:
        base = args.url.rstrip("/")
        _wait(f"{base}/health", None)
        user_ids = args.user_ids.split(",")
    host, port = urlsplit(base).hostname, urlsplit(base).port
    server_pid = process.pid if process else None
    rss_before = process_tree_rss_mb(server_pid) if server_pid else None
    generator = random.Random(0)
    single = [_get(f"/recommend?user={generator.choice(user_ids)}&k=20", host) for _ in range(args.requests)]
    batch_users = generator.sample(user_ids, min(args.batch_users, len(user_ids)))
    if args.url:  # an older server takes many users in the query string
        batch = [_get(f"/recommend?user={','.join(batch_users)}&k=20", host)] * args.batch_requests
    else:
        batch = [_post("/recommend", host, {"users": batch_users, "k": 20})] * args.batch_requests
    asyncio.run(_load(host, port, single[:200], args.clients, args.seconds))  # warm-up
    result = {
        "label": args.label, "export": args.export, "url": args.url, "index": args.index, "workers": args.workers,
        "clients": args.clients, "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "single_user": asyncio.run(_load(host, port, single, args.clients, args.seconds)),
        f"{len(batch_users)}_users": asyncio.run(_load(host, port, batch, 1, args.seconds)),
        "server_rss_mb_before": rss_before,
        "server_rss_mb_after": process_tree_rss_mb(server_pid) if server_pid else None,
    }
    if process is not None:
        process.terminate()
        process.wait(timeout=30)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(out.read_text()) if out.exists() else []
    out.write_text(json.dumps([*existing, result], indent=2))
    single_user = result["single_user"]
    print(f"{args.label or base}: {single_user['requests_per_second']:.0f} requests/s, p50 {single_user['p50_ms']:.1f} "
          f"ms, p95 {single_user['p95_ms']:.1f} ms, p99 {single_user['p99_ms']:.1f} ms, errors "
          f"{single_user['errors']}; {len(batch_users)} users: p50 {result[f'{len(batch_users)}_users']['p50_ms']:.0f} ms;"
          f" RSS {rss_before or 0:.0f} → {result['server_rss_mb_after'] or 0:.0f} MB")


if __name__ == "__main__":
    main()
