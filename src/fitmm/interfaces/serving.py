"""HTTP serving of a finished run: top-K recommendations as JSON (``fitmm serve``).

Endpoints (GET only, responses are JSON):

- ``/health`` — the run's model, dataset and sizes.
- ``/recommend?user=U[&user=V…][&k=20][&exclude=train,valid]`` — top-``k`` items and scores for
  each user (internal IDs, as in the dataset's ``.inter`` file; ``user=1,2,3`` works too).
  ``exclude`` lists the splits whose items are left out (default ``train``; empty for none). A
  user with fewer than ``k`` items left gets a shorter list.

Bad requests get status 400 and ``{"error": "…"}``; unknown paths 404. The run's scorer is built
at the first request and kept, so later requests cost one user-batch of scoring and a top-k.
"""

from __future__ import annotations

import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np

from fitmm.errors import InputError
from fitmm.interfaces.api import TrainedRun

log = logging.getLogger(__name__)

DEFAULT_K = 20


def _integer(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InputError(f"{name} must be an integer, got {text!r}") from None


def recommend_request(run: TrainedRun, query: dict[str, list[str]]) -> dict:
    """Answer one ``/recommend`` query (as parsed by ``urllib.parse.parse_qs``)."""
    unknown = sorted(set(query) - {"user", "k", "exclude"})
    if unknown:
        raise InputError(f"unknown parameter(s) {', '.join(unknown)}: use user, k and exclude")
    user_texts = [part for value in query.get("user", []) for part in value.split(",") if part.strip()]
    if not user_texts:
        raise InputError("give at least one user, e.g. /recommend?user=0")
    users = np.array([_integer(text.strip(), "user") for text in user_texts], dtype=np.int64)
    k_values = query.get("k", [str(DEFAULT_K)])
    if len(k_values) != 1:
        raise InputError("give k once")
    k = _integer(k_values[0], "k")
    exclude_values = query.get("exclude", ["train"])
    if len(exclude_values) != 1:
        raise InputError("give exclude once, as a comma-separated list of splits")
    exclude = tuple(part.strip() for part in exclude_values[0].split(",") if part.strip())
    items, scores = run.recommend(users, k, exclude)
    return {
        "k": k,
        "exclude": list(exclude),
        "recommendations": [_ranked_list(user, user_items, user_scores)
                            for user, user_items, user_scores in zip(users, items, scores)],
    }


def _ranked_list(user: int, items: np.ndarray, scores: np.ndarray) -> dict:
    """One user's list without excluded items (those score −inf when fewer than k remain)."""
    kept = np.isfinite(scores)
    return {"user": int(user), "items": items[kept].tolist(), "scores": scores[kept].tolist()}


def health(run: TrainedRun) -> dict:
    """What ``/health`` answers: which run is served, on what data."""
    return {
        "status": "ok",
        "model": run.result["model"],
        "dataset": run.result["dataset"],
        "best_epoch": run.result["best_epoch"],
        "users": run.dataset.n_users,
        "items": run.dataset.n_items,
    }


def make_server(run: TrainedRun, host: str, port: int) -> ThreadingHTTPServer:
    """An HTTP server answering for ``run``; port 0 picks a free port (see ``server_address``)."""
    scoring = threading.Lock()

    class RecommendationHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/health":
                self._reply(HTTPStatus.OK, health(run))
            elif url.path == "/recommend":
                try:
                    with scoring:
                        body = recommend_request(run, parse_qs(url.query, keep_blank_values=True))
                except InputError as error:
                    self._reply(HTTPStatus.BAD_REQUEST, {"error": str(error)})
                    return
                self._reply(HTTPStatus.OK, body)
            else:
                self._reply(HTTPStatus.NOT_FOUND, {"error": f"no endpoint {url.path}: use /recommend or /health"})

        def _reply(self, status: HTTPStatus, body: dict) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args) -> None:
            log.info("%s %s", self.address_string(), format % args)

    return ThreadingHTTPServer((host, port), RecommendationHandler)
