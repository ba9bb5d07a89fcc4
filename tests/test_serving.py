"""Serving: exports, the exact and ANN indexes, the HTTP application, and the `fitmm serve` process."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fitmm
from fitmm.errors import InputError
from fitmm.training.runs import load_run

pytest.importorskip("fastapi", reason="the serving extra is not installed (pip install 'fitmm[serve]')")
pytest.importorskip("faiss", reason="the serving extra is not installed (pip install 'fitmm[serve]')")

from fastapi.testclient import TestClient  # noqa: E402

from fitmm.serving.app import Limits, ServeConfig, create_app  # noqa: E402
from fitmm.serving.export import export_run, load_export  # noqa: E402


def fitmm_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fitmm", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lightgcn")
    fitmm.train("lightgcn", "ml100k", out, epochs=8, overrides={"learning_rate": 0.005}, progress=False)
    return load_run(out)


@pytest.fixture(scope="module")
def export(run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("export") / "ml100k"
    export_run(run, folder)
    return folder


@pytest.fixture(scope="module")
def client(export):
    with TestClient(create_app(ServeConfig(str(export), "exact", Limits(max_users=50, max_k=100,
                                                                         max_body_bytes=4096)))) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def ann_client(export):
    with TestClient(create_app(ServeConfig(str(export), "ann", Limits()))) as test_client:
        yield test_client


# ----------------------------------------------------------------------------- export
def test_export_holds_exact_score_vectors_ids_and_exclusions(run, export):
    loaded = load_export(export)
    users, items = run.score_vectors
    np.testing.assert_array_equal(loaded.user_vectors, users.numpy())
    np.testing.assert_array_equal(loaded.item_vectors, items.numpy())
    with_model = run.model.scorer()(__import__("torch").arange(5)).detach().numpy()
    np.testing.assert_allclose(loaded.user_vectors[:5] @ loaded.item_vectors.T, with_model, rtol=1e-5, atol=1e-5)
    assert loaded.user_ids[:3].tolist() == ["1", "2", "3"]  # MovieLens IDs
    assert (loaded.train_items != run.dataset.train).nnz == 0
    manifest = loaded.manifest
    assert manifest["model"] == "lightgcn" and manifest["dataset"]["fingerprint"] == run.result["dataset_fingerprint"]
    assert manifest["ann"]["M"] == 32 and manifest["ann"]["recall@20_vs_exact"] >= 0.99


def test_export_refuses_a_model_without_score_vectors_and_a_foreign_folder(tmp_path):
    fitmm.train("lgmrec", "ml100k", tmp_path / "lgmrec", epochs=1, progress=False)
    completed = fitmm_cli("export", "--run", str(tmp_path / "lgmrec"), "--out", str(tmp_path / "e"))
    assert completed.returncode == 2 and "cannot be exported" in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    completed = fitmm_cli("export", "--run", str(tmp_path / "lgmrec"), "--out", str(tmp_path / "mine"))
    assert completed.returncode == 2 and (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(("damage", "message"), [
    (lambda folder: (folder / "manifest.json").write_text("{"), "not valid JSON"),
    (lambda folder: (folder / "user_ids.txt").write_text("a\na\n"), "IDs, the vectors have"),
    (lambda folder: np.save(folder / "item_vectors.npy", np.full((3, 2), np.nan, np.float32)), "NaN"),
    (lambda folder: (folder / "user_vectors.npy").write_bytes(b"\x93NUMPY garbage"), "not a readable .npy"),
    (lambda folder: (folder / "manifest.json").unlink(), "no manifest.json"),
])
def test_damaged_exports_are_refused_in_one_line(export, tmp_path, damage, message):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(export, copy)
    damage(copy)
    with pytest.raises(InputError, match=message) as error:
        load_export(copy)
    assert "\n" not in str(error.value)


def test_export_with_new_items_serves_them_by_their_content(run, tmp_path):
    item = 49  # Star Wars (MovieLens 50): a warm item with a poster and a description
    folder = tmp_path / "new"
    folder.mkdir()
    for name, modality in run.dataset.modalities.items():
        np.save(folder / f"{name}_feat.npy", modality.features[[item]])
        np.save(folder / f"{name}_mask.npy", modality.mask[[item]])
    (folder / "i_id_mapping.csv").write_text("raw_id,itemID\nstar-wars-copy,0\n")
    completed = fitmm_cli("export", "--run", str(run.directory), "--out", str(tmp_path / "export"), "--new-items",
                          str(folder), "--neighbours", "1", "--index", "exact")
    assert completed.returncode == 0, completed.stderr
    assert "1,683 items (1 of them new" in completed.stdout
    loaded = load_export(tmp_path / "export")
    assert loaded.item_ids[-1] == "star-wars-copy" and loaded.manifest["new_items"] == {"count": 1, "neighbours": 1}
    np.testing.assert_allclose(loaded.item_vectors[-1], loaded.item_vectors[item], rtol=1e-6)
    with TestClient(create_app(ServeConfig(str(tmp_path / "export"), "exact", Limits()))) as client:
        similar = client.get("/similar-items", params={"item": "star-wars-copy", "k": 1}).json()
        assert similar["items"] == ["50"] and similar["similarities"][0] == pytest.approx(1.0, abs=1e-5)


def test_serving_an_export_loads_no_model_or_training_code(export):
    probe = ("import sys\n"
             "from fitmm.interfaces.cli import build_parser\n"
             "from fitmm.serving.app import Limits, ServeConfig, create_app\n"
             "build_parser()\n"
             f"create_app(ServeConfig({str(export)!r}, 'ann', Limits()))\n"
             "print(sorted(m for m in sys.modules if m.startswith(('fitmm.models', 'fitmm.training'))))\n")
    completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- answers
def test_exact_index_answers_equal_fitmm_recommend(run, client, tmp_path):
    path = tmp_path / "recs.csv"
    completed = fitmm_cli("recommend", "--run", str(run.directory), "--k", "20", "--split", "test", "--out",
                          str(path))
    assert completed.returncode == 0, completed.stderr
    expected: dict[str, list[str]] = {}
    with path.open() as handle:
        for row in csv.DictReader(handle):
            expected.setdefault(row["user_id"], []).append(row["item_id"])
    users = list(expected)[:40]
    answer = client.post("/recommend", json={"users": users, "k": 20}).json()
    assert [entry["user"] for entry in answer["recommendations"]] == users
    for entry in answer["recommendations"]:
        assert entry["items"] == expected[entry["user"]]


def test_ann_index_recall_against_exact(client, ann_client, run):
    users = run.dataset.raw_ids("user")[::7].tolist()[:50]
    exact = client.post("/recommend", json={"users": users, "k": 20}).json()["recommendations"]
    approximate = ann_client.post("/recommend", json={"users": users, "k": 20}).json()["recommendations"]
    recall = np.mean([len(set(a["items"]) & set(e["items"])) / 20 for a, e in zip(approximate, exact)])
    assert recall >= 0.99
    train = run.dataset.train
    for entry in approximate:  # never a training item
        user = run.dataset.internal_ids("user", [entry["user"]])[0]
        assert not set(run.dataset.internal_ids("item", entry["items"]).tolist()) & set(train[user].indices)


def test_get_recommend_with_raw_and_internal_ids(client, run):
    answer = client.get("/recommend", params={"user": ["1", "2,1"], "k": 5}).json()
    assert [entry["user"] for entry in answer["recommendations"]] == ["1", "2"]  # repeated users answered once
    assert all(len(entry["items"]) == 5 for entry in answer["recommendations"])
    internal = client.get("/recommend", params={"user": "0", "k": 5, "ids": "internal"}).json()
    assert internal["recommendations"][0]["items"] == [int(i) - 1 for i in answer["recommendations"][0]["items"]]
    kept = client.get("/recommend", params={"user": "1", "k": 100, "exclude": "none"}).json()
    seen = set(run.dataset.raw_ids("item")[run.dataset.train[0].indices])
    assert set(kept["recommendations"][0]["items"]) & seen


def test_new_user_from_items_is_folded_in(client, run):
    seeds = ["50", "181", "100"]  # Star Wars, Return of the Jedi, Fargo
    answer = client.get("/recommend", params={"items": ",".join(seeds), "k": 10}).json()
    items = answer["recommendations"][0]["items"]
    assert len(items) == 10 and not set(items) & set(seeds)
    direct = run.recommend(items=[seeds], k=10)[0]
    assert direct.items == items
    posted = client.post("/recommend", json={"items": [seeds, ["1"]], "k": 3}).json()["recommendations"]
    assert posted[0]["items"] == items[:3] and len(posted[1]["items"]) == 3


def test_cli_recommends_for_new_users_from_a_file(client, run, tmp_path):
    seeds = tmp_path / "new_users.csv"
    seeds.write_text("user_id,item_id,when\nalice,50,2026-01-01\nalice,181,2026-01-02\nalice,100,2026-01-03\n"
                     "bob,1,2026-02-01\n")
    out = tmp_path / "recs.csv"
    completed = fitmm_cli("recommend", "--run", str(run.directory), "--new-users", str(seeds), "--k", "10",
                          "--out", str(out))
    assert completed.returncode == 0, completed.stderr
    assert "for 2 new users of" in completed.stdout
    written: dict[str, list[str]] = {}
    with out.open() as handle:
        for row in csv.DictReader(handle):
            written.setdefault(row["user_id"], []).append(row["item_id"])
    served = client.post("/recommend", json={"items": [["50", "181", "100"], ["1"]], "k": 10}).json()
    assert written == {"alice": served["recommendations"][0]["items"], "bob": served["recommendations"][1]["items"]}
    assert not set(written["alice"]) & {"50", "181", "100"} and "1" not in written["bob"]


@pytest.mark.parametrize(("content", "message"), [
    ("user,item\nalice,50\n", "needs the columns user_id and item_id (missing item_id, user_id)"),
    ("user_id,item_id\nalice,\n", "line 2: empty user_id or item_id"),
    ("user_id,item_id\n", "no rows"),
    ("user_id,item_id\nalice,no-such-movie\n", "no-such-movie"),
    (b"user_id,item_id\nalice,5\xff0\n", "not UTF-8 text"),
])
def test_cli_new_users_file_errors_are_one_line(run, tmp_path, content, message):
    seeds = tmp_path / "new_users.csv"
    seeds.write_bytes(content if isinstance(content, bytes) else content.encode())
    completed = fitmm_cli("recommend", "--run", str(run.directory), "--new-users", str(seeds), "--out",
                          str(tmp_path / "recs.csv"))
    assert completed.returncode == 2 and message in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1 and not (tmp_path / "recs.csv").exists()


def test_similar_items(client):
    answer = client.get("/similar-items", params={"item": "50", "k": 5}).json()
    assert answer["item"] == "50" and len(answer["items"]) == 5 and "50" not in answer["items"]
    assert answer["similarities"] == sorted(answer["similarities"], reverse=True)


def test_health_ready_docs_and_metrics(client):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    assert ready["ready"] and ready["model"] == "lightgcn" and ready["users"] == 943 and ready["index"] == "exact"
    assert client.get("/docs").status_code == 200
    assert "/recommend" in client.get("/openapi.json").json()["paths"]
    client.get("/recommend", params={"user": "nobody"})
    metrics = client.get("/metrics").text
    assert 'fitmm_requests_total{route="/recommend",status="404"}' in metrics
    assert "fitmm_request_seconds_bucket" in metrics


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "reason"), [
    ("get", "/recommend", {"params": {"user": "nobody"}}, 404, "unknown user ID 'nobody'"),
    ("get", "/recommend", {"params": {"user": "1", "k": 0}}, 400, "k must be between 1 and 100"),
    ("get", "/recommend", {"params": {"user": "1", "k": "many"}}, 422, "k:"),
    ("get", "/recommend", {"params": {"user": "1", "exclude": "valid"}}, 400, "exclude must be train or none"),
    ("get", "/recommend", {"params": {"user": "1", "ids": "weird"}}, 400, "ids must be raw or internal"),
    ("get", "/recommend", {"params": {}}, 400, "give at least one user"),
    ("get", "/recommend", {"params": {"user": "1", "items": "2"}}, 400, "not both"),
    ("get", "/recommend", {"params": {"items": "nothing"}}, 404, "unknown item ID 'nothing'"),
    ("get", "/recommend", {"params": {"user": ",".join(map(str, range(1, 60)))}}, 413, "the limit is 50"),
    ("post", "/recommend", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, ""),
    ("post", "/recommend", {"json": {"users": "1"}}, 422, "users: expected a list of IDs"),
    ("post", "/recommend", {"json": {"users": ["1"], "k": "5"}}, 422, "k must be an integer"),
    ("post", "/recommend", {"json": {"users": ["1"] * 2000}}, 413, "request body over 4096 bytes"),
    ("get", "/similar-items", {"params": {"item": "nothing"}}, 404, "unknown item ID"),
    ("get", "/nowhere", {}, 404, "no endpoint /nowhere"),
    ("delete", "/recommend", {}, 405, "DELETE is not allowed here"),
])
def test_every_error_is_json_with_a_reason(client, method, path, kwargs, status, reason):
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    assert reason in response.json()["error"]
    if status == 405:
        assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}


def test_a_large_request_over_the_time_limit_gets_503(export):
    with TestClient(create_app(ServeConfig(str(export), "exact", Limits(timeout_seconds=1e-9)))) as slow:
        response = slow.post("/recommend", json={"users": [str(user) for user in range(1, 101)], "k": 20})
        assert response.status_code == 503 and "not answered within" in response.json()["error"]
        assert slow.get("/recommend", params={"user": "1"}).status_code == 200  # small requests are answered inline


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.lists(st.tuples(st.sampled_from(["user", "items", "k", "exclude", "ids", "other", "item"]),
                                st.text(max_size=12)), max_size=5),
       path=st.sampled_from(["/recommend", "/similar-items"]))
def test_fuzzed_queries_get_an_answer_or_a_json_reason(client, query, path):
    response = client.get(path, params=query)
    assert response.status_code in (200, 400, 404, 413, 422), response.text
    body = response.json()
    assert ("error" in body and "\n" not in body["error"]) if response.status_code != 200 else "error" not in body


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(st.binary(max_size=200), st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["users", "items", "k", "exclude", "ids", "x"]), children, max_size=4), max_leaves=12)
    .map(lambda value: json.dumps(value).encode())))
def test_fuzzed_bodies_get_an_answer_or_a_json_reason(client, body):
    response = client.post("/recommend", content=body, headers={"content-type": "application/json"})
    assert response.status_code in (200, 400, 404, 413, 422), response.text
    assert response.headers["content-type"].startswith("application/json")


# ----------------------------------------------------------------------------- raw IDs end to end
def test_a_catalogue_with_string_ids_speaks_its_own_ids_everywhere(tmp_path):
    rng = np.random.default_rng(0)
    users = [f"customer-{u:03d}" for u in range(60)]
    items = [f"SKU-{chr(65 + i % 26)}{i:02d}" for i in range(40)]
    lines = ["user,item"] + [f"{user},{item}" for user in users
                             for item in rng.choice(items, size=12, replace=False)]
    (tmp_path / "interactions.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "items.csv").write_text("item,title\n" + "".join(f"{item},Title {item}\n" for item in items))
    completed = fitmm_cli("data", "prepare", "--interactions", str(tmp_path / "interactions.csv"), "--items",
                          str(tmp_path / "items.csv"), "--text-encoder", "none", "--image-encoder", "none",
                          "--out", str(tmp_path / "shop"))
    assert completed.returncode == 0, completed.stderr
    fitmm.train("mf", tmp_path / "shop", tmp_path / "run", epochs=2, progress=False)
    completed = fitmm_cli("recommend", "--run", str(tmp_path / "run"), "--k", "5", "--out", str(tmp_path / "r.csv"))
    assert completed.returncode == 0, completed.stderr
    with (tmp_path / "r.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows and {row["user_id"] for row in rows} <= set(users) and {row["item_id"] for row in rows} <= set(items)
    run = load_run(tmp_path / "run")
    answer = run.recommend(["customer-007"], k=5)[0]
    assert answer.user == "customer-007" and set(answer.items) <= set(items)
    export_run(run, tmp_path / "export")
    with TestClient(create_app(ServeConfig(str(tmp_path / "export"), "exact", Limits()))) as client:
        served = client.get("/recommend", params={"user": "customer-007", "k": 5}).json()["recommendations"][0]
        assert served["items"] == answer.items
        similar = client.get("/similar-items", params={"item": items[0]}).json()
        assert set(similar["items"]) <= set(items)


# ----------------------------------------------------------------------------- the server process
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_ready(port: int, process: subprocess.Popen) -> None:
    for _ in range(300):
        if process.poll() is not None:
            raise AssertionError(f"the server exited: {process.stderr.read()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the server did not become ready")


@pytest.mark.parametrize(("source", "workers"), [("export", 1), ("run", 2)])
def test_fitmm_serve_answers_survives_a_hang_up_and_stops_on_ctrl_c(run, export, source, workers):
    port = _free_port()
    origin = ["--export", str(export)] if source == "export" else ["--run", str(run.directory)]
    process = subprocess.Popen([sys.executable, "-m", "fitmm", "serve", *origin, "--port", str(port),
                                "--workers", str(workers)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        _wait_ready(port, process)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/recommend?user=1&k=3", timeout=5) as response:
            assert len(json.loads(response.read())["recommendations"][0]["items"]) == 3
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/recommend?user=nobody", timeout=5)
        assert error.value.code == 404 and "unknown user" in json.loads(error.value.read())["error"]
        with socket.create_connection(("127.0.0.1", port)) as hung_up:  # a client that leaves mid-request
            hung_up.sendall(b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"us")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            assert json.loads(response.read()) == {"status": "ok"}
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0 and "Traceback" not in stderr


def test_fitmm_serve_refuses_bad_ports_and_busy_ports_in_one_line(export):
    completed = fitmm_cli("serve", "--export", str(export), "--port", "70000")
    assert completed.returncode == 2 and "between 1 and 65535" in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        completed = fitmm_cli("serve", "--export", str(export), "--port", str(busy.getsockname()[1]))
    assert completed.returncode == 2 and "cannot listen on 127.0.0.1" in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1 and "Traceback" not in completed.stderr


def test_fitmm_serve_needs_a_run_or_an_export():
    completed = fitmm_cli("serve")
    assert completed.returncode == 2 and "give --run DIR" in completed.stderr
