"""HTTP serving: answers equal the Python API's, bad requests get a 400 with a reason, the CLI serves."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
from urllib.error import HTTPError
from urllib.request import urlopen

import numpy as np
import pytest

import fitmm
from fitmm.interfaces.api import load_run
from fitmm.interfaces.serving import make_server


def _strict_json(text: str):
    def reject(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=reject)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("mf")
    fitmm.train("mf", "ml100k", out, epochs=3, progress=False)
    return out


@pytest.fixture(scope="module")
def served(run_dir):
    run = load_run(run_dir)
    server = make_server(run, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    yield run, f"http://{host}:{port}"
    server.shutdown()
    server.server_close()


def _get(url: str) -> tuple[int, dict]:
    try:
        with urlopen(url, timeout=30) as response:
            return response.status, _strict_json(response.read().decode())
    except HTTPError as error:
        return error.code, _strict_json(error.read().decode())


def test_health_names_the_run(served):
    run, base = served
    status, body = _get(f"{base}/health")
    assert status == 200
    assert body == {"status": "ok", "model": "mf", "dataset": "ml100k", "best_epoch": run.result["best_epoch"],
                    "users": run.dataset.n_users, "items": run.dataset.n_items}


def test_recommend_equals_the_python_api(served):
    run, base = served
    status, body = _get(f"{base}/recommend?user=0,5&user=17&k=10")
    assert status == 200 and body["k"] == 10 and body["exclude"] == ["train"]
    items, scores = run.recommend(np.array([0, 5, 17]), 10)
    assert [entry["user"] for entry in body["recommendations"]] == [0, 5, 17]
    for entry, user_items, user_scores in zip(body["recommendations"], items, scores):
        assert entry["items"] == user_items.tolist()
        assert entry["scores"] == pytest.approx(user_scores.tolist(), rel=1e-6)
        assert not set(entry["items"]) & set(run.dataset.train[entry["user"]].indices)
        assert entry["scores"] == sorted(entry["scores"], reverse=True)


def test_exclude_chooses_the_splits_left_out(served):
    run, base = served
    user = int(run.dataset.evaluation_users("test")[0])
    n_items = run.dataset.n_items
    _, everything = _get(f"{base}/recommend?user={user}&k={n_items}&exclude=")
    assert sorted(everything["recommendations"][0]["items"]) == list(range(n_items))
    _, unseen = _get(f"{base}/recommend?user={user}&k={n_items}&exclude=train,valid")
    seen = set(run.dataset.train[user].indices) | set(run.dataset.valid[user].indices)
    listed = unseen["recommendations"][0]["items"]
    assert len(listed) == n_items - len(seen) and not set(listed) & seen


@pytest.mark.parametrize(("query", "reason"), [
    ("", "give at least one user"),
    ("user=abc", "user must be an integer"),
    ("user=100000", "user ID 100000 is outside"),
    ("user=-1", "user ID -1 is outside"),
    ("user=0&k=0", "k must be between 1 and the number of items"),
    ("user=0&k=100000", "k must be between 1 and the number of items"),
    ("user=0&k=ten", "k must be an integer"),
    ("user=0&k=5&k=6", "give k once"),
    ("user=0&exclude=training", "unknown split 'training'"),
    ("user=0&users=1", "unknown parameter(s) users"),
])
def test_bad_requests_get_400_with_the_reason(served, query, reason):
    _, base = served
    status, body = _get(f"{base}/recommend?{query}")
    assert status == 400
    assert reason in body["error"]


def test_unknown_path_gets_404(served):
    _, base = served
    status, body = _get(f"{base}/recommendations?user=0")
    assert status == 404 and "/recommend" in body["error"]


def test_cli_serves_a_run(run_dir):
    server = subprocess.Popen([sys.executable, "-m", "fitmm", "serve", "--run", str(run_dir), "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = server.stdout.readline()
        match = re.search(r"http://([\d.]+):(\d+)/", banner)
        assert match, banner + server.stderr.read()
        status, body = _get(f"http://{match[1]}:{match[2]}/recommend?user=3&k=5")
        assert status == 200 and len(body["recommendations"][0]["items"]) == 5
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_cli_serve_rejects_a_directory_without_a_run(tmp_path):
    completed = subprocess.run([sys.executable, "-m", "fitmm", "serve", "--run", str(tmp_path)],
                               capture_output=True, text=True)
    assert completed.returncode == 2
    assert "no result.json" in completed.stderr and "Traceback" not in completed.stderr


def test_cli_serve_reports_a_port_in_use(run_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        completed = subprocess.run([sys.executable, "-m", "fitmm", "serve", "--run", str(run_dir), "--port", str(port)],
                                   capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in completed.stderr and "Traceback" not in completed.stderr
