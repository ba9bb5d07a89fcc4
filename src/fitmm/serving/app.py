"""The HTTP service: an ASGI application (FastAPI) answering top-k requests from an export.

Endpoints (JSON in and out; raw IDs of the catalogue unless ``ids=internal``):

- ``GET /recommend?user=U&user=V&k=20`` (or ``user=U,V``): known users' top-k, their training
  items left out (``exclude=none`` keeps them);
- ``GET /recommend?items=I,J&k=20``: a new user's top-k from the items they interacted with (fold-in);
- ``POST /recommend`` with ``{"users": [...], "k": 20}`` or ``{"items": [[...], ...], "k": 20}``;
- ``GET /similar-items?item=I&k=10``: the items whose vectors are most cosine-similar;
- ``GET /health`` (the process is up), ``GET /ready`` (the index is loaded; what is served);
- ``GET /docs`` (OpenAPI), ``GET /metrics`` (Prometheus: requests by route and status, latency).

Every error is JSON ``{"error": "..."}``: 400 bad value, 404 unknown ID or path, 405 wrong method
(with ``Allow``), 413 body or request too large, 422 malformed request, 503 a request about more
than ``INLINE_SIZE`` users not answered within the time limit. Limits (:class:`Limits`) bound every
request; repeated users or items in one request are answered once.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
from fastapi import Body, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from fitmm.errors import InputError
from fitmm.serving.export import load_export
from fitmm.serving.index import ExactIndex, HnswIndex, Retriever

CONFIG_VARIABLE = "FITMM_SERVE_CONFIG"
INLINE_SIZE = 8
"""Requests about at most this many users (well under a millisecond of work) are answered in the
event loop; larger ones in a worker thread, under the time limit."""


@dataclass(frozen=True)
class Limits:
    """What one request may ask for (``fitmm serve`` flags of the same names)."""

    max_users: int = 1000  # users (or new users) per request
    max_k: int = 1000  # list length
    max_body_bytes: int = 1 << 20  # POST body size
    timeout_seconds: float = 10.0  # answer within this, or 503


@dataclass(frozen=True)
class ServeConfig:
    """Everything a server process needs; passed to worker processes as JSON in an environment variable."""

    export: str
    index: str  # "exact" or "ann"
    limits: Limits

    def to_json(self) -> str:
        return json.dumps({"export": self.export, "index": self.index, "limits": asdict(self.limits)})

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        content = json.loads(text)
        return cls(content["export"], content["index"], Limits(**content["limits"]))


class RequestProblem(Exception):
    """A request that cannot be answered: its HTTP status and the reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _id_list(values: list[str]) -> list[str]:
    """``["a,b", "c"]`` → ``["a", "b", "c"]`` without blanks, each value once, in order of first mention."""
    return list(dict.fromkeys(part.strip() for value in values for part in value.split(",") if part.strip()))


class Service:
    """The answers of one server process (no HTTP in here)."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.limits = config.limits
        self.export = load_export(config.export)
        if config.index == "ann":
            if self.export.manifest.get("ann") is None:
                raise InputError(f"--export {config.export}: records no ANN parameters; export again with "
                                 "--index hnsw, or serve with --index exact")
            index = HnswIndex(self.export.item_vectors, self.export.manifest["ann"])
        else:
            index = ExactIndex(self.export.item_vectors)
        self.retriever = Retriever(self.export.user_vectors, self.export.item_vectors, self.export.train_items, index)
        self.positions = {kind: {raw: row for row, raw in enumerate(ids.tolist())}
                          for kind, ids in (("user", self.export.user_ids), ("item", self.export.item_ids))}

    def _internal(self, kind: str, values: list[str], internal_ids: bool) -> np.ndarray:
        count = len(self.positions[kind])
        if internal_ids:
            try:
                rows = np.array([int(value) for value in values], dtype=np.int64)
            except ValueError:
                raise RequestProblem(400, f"internal {kind} IDs are integers; got {values!r}"[:200]) from None
            bad = rows[(rows < 0) | (rows >= count)]
            if bad.size:
                raise RequestProblem(404, f"internal {kind} ID {bad[0]} is outside 0..{count - 1}")
            return rows
        unknown = [value for value in values if value not in self.positions[kind]]
        if unknown:
            raise RequestProblem(404, f"unknown {kind} ID {unknown[0]!r}")
        return np.array([self.positions[kind][value] for value in values], dtype=np.int64)

    def _check_k(self, k: int) -> None:
        if not 1 <= k <= min(self.limits.max_k, len(self.positions["item"])):
            raise RequestProblem(400, f"k must be between 1 and {min(self.limits.max_k, len(self.positions['item']))}; "
                                 f"got {k}")

    def _check_count(self, count: int, what: str) -> None:
        if count == 0:
            raise RequestProblem(400, f"give at least one {what}")
        if count > self.limits.max_users:
            raise RequestProblem(413, f"{count} {what}s in one request; the limit is {self.limits.max_users}")

    def _labelled(self, labels: list, answers: list, internal_ids: bool) -> list[dict]:
        ids = self.export.item_ids
        return [{"user": label, "items": (items.tolist() if internal_ids else ids[items].tolist()),
                 "scores": scores.astype(float).tolist()}
                for label, (items, scores) in zip(labels, answers)]

    def recommend(self, users: list[str], items: list[list[str]] | None, k: int, exclude: str,
                  internal_ids: bool) -> dict:
        """The body of a /recommend answer."""
        self._check_k(k)
        if exclude not in ("train", "none"):
            raise RequestProblem(400, f"exclude must be train or none; got {exclude!r}")
        if items is not None:
            if users:
                raise RequestProblem(400, "give users or items (a new user's items), not both")
            seeds = [list(dict.fromkeys(entry)) for entry in items]
            self._check_count(len(seeds), "new user")
            if any(not entry for entry in seeds):
                raise RequestProblem(400, "a new user needs at least one item")
            rows = [self._internal("item", entry, internal_ids) for entry in seeds]
            answers = self.retriever.for_new_users(rows, k)
            return {"k": k, "exclude": "the given items", "recommendations": self._labelled(
                [{"items": entry} for entry in seeds], answers, internal_ids)}
        self._check_count(len(users), "user")
        rows = self._internal("user", users, internal_ids)
        answers = self.retriever.for_users(rows, k, exclude == "train")
        labels = [int(user) for user in users] if internal_ids else users
        return {"k": k, "exclude": exclude, "recommendations": self._labelled(labels, answers, internal_ids)}

    def similar(self, item: str, k: int, internal_ids: bool) -> dict:
        """The body of a /similar-items answer."""
        self._check_k(k)
        row = self._internal("item", [item], internal_ids)[0]
        items, scores = self.retriever.similar_items(int(row), k)
        return {"item": int(row) if internal_ids else item, "k": k,
                "items": items.tolist() if internal_ids else self.export.item_ids[items].tolist(),
                "similarities": scores.astype(float).tolist()}

    def description(self) -> dict:
        manifest = self.export.manifest
        return {"model": manifest["model"], "dataset": manifest["dataset"]["name"], "run": manifest["run"],
                "users": manifest["users"], "items": manifest["items"], "index": self.config.index,
                "limits": asdict(self.limits)}


class _Metrics:
    """Prometheus request counters and latency histogram, shared across worker processes when
    ``PROMETHEUS_MULTIPROC_DIR`` is set (``fitmm serve --workers N`` sets it)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.multiprocess = "PROMETHEUS_MULTIPROC_DIR" in os.environ
        registry = None if self.multiprocess else self.registry
        self.requests = Counter("fitmm_requests_total", "HTTP requests answered", ["route", "status"],
                                registry=registry)
        self.latency = Histogram("fitmm_request_seconds", "Time to answer a request", ["route"], registry=registry,
                                 buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest, multiprocess

        if self.multiprocess:
            registry = type(self.registry)()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _Guard:
    """ASGI middleware: the body-size limit (413) and request metrics."""

    def __init__(self, app, limits: Limits, metrics: _Metrics) -> None:
        self.app = app
        self.limits = limits
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = {"code": 500}
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limits.max_body_bytes):
            await _send_json(send, 413, {"error": f"request body over {self.limits.max_body_bytes} bytes"})
            self._record(scope, 413, started)
            return
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limits.max_body_bytes:
                raise RequestProblem(413, f"request body over {self.limits.max_body_bytes} bytes")
            return message

        async def tracking_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        await self.app(scope, limited_receive, tracking_send)
        self._record(scope, status["code"], started)

    def _record(self, scope, status: int, started: float) -> None:
        route = scope.get("route")
        name = getattr(route, "path", "unmatched")
        self.metrics.requests.labels(name, str(status)).inc()
        self.metrics.latency.labels(name).observe(time.perf_counter() - started)


async def _send_json(send, status: int, body: dict) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


def create_app(config: ServeConfig | None = None) -> FastAPI:
    """The ASGI application for ``config`` (default: the JSON in ``$FITMM_SERVE_CONFIG``, as a worker
    process started by ``fitmm serve --workers N`` gets it)."""
    config = config or ServeConfig.from_json(os.environ[CONFIG_VARIABLE])
    service = Service(config)
    metrics = _Metrics()
    app = FastAPI(title="fitmm recommendations", version="1",
                  description="Top-k recommendations of a trained fitmm run, by the catalogue's own IDs.")
    app.state.service = service

    async def answer(size: int, compute, *arguments) -> JSONResponse:
        """``compute(*arguments)`` for a request about ``size`` users or items: small ones right here
        (a thread hand-off would cost more than the answer), larger ones in a worker thread under
        the time limit. The answer is plain JSON data, sent as it is (no re-encoding pass)."""
        if size <= INLINE_SIZE:
            return JSONResponse(compute(*arguments))
        try:
            body = await asyncio.wait_for(run_in_threadpool(compute, *arguments), config.limits.timeout_seconds)
        except asyncio.TimeoutError:
            raise RequestProblem(503, f"not answered within {config.limits.timeout_seconds} s") from None
        return JSONResponse(body)

    @app.exception_handler(RequestProblem)
    async def problem(request: Request, error: RequestProblem):
        return JSONResponse({"error": error.reason}, status_code=error.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        reason = {404: f"no endpoint {request.url.path}: see /docs", 405: f"{request.method} is not allowed here"}
        headers = error.headers
        if error.status_code == 405:  # every method of the path (the router names only its first route's)
            methods = {method for route in app.routes if getattr(route, "path", None) == request.url.path
                       for method in getattr(route, "methods", ())}
            headers = {"Allow": ", ".join(sorted(methods))}
        return JSONResponse({"error": reason.get(error.status_code, str(error.detail))},
                            status_code=error.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError):
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("query", "body"))
        return JSONResponse({"error": f"{where or 'request'}: {first.get('msg', 'invalid')}"}, status_code=422)

    @app.get("/recommend", summary="Top-k items of known users, or of a new user from their items")
    async def recommend_get(user: list[str] = Query(default=[], description="user ID(s); repeat or comma-separate"),
                            items: str | None = Query(default=None, description="a new user's item IDs, "
                                                      "comma-separated"),
                            k: int = Query(default=20, description="list length"),
                            exclude: str = Query(default="train", description="train (default) or none"),
                            ids: str = Query(default="raw", description="raw (default) or internal")):
        internal = _ids_kind(ids)
        seeds = None if items is None else [_id_list([items])]
        users = _id_list(user)
        return await answer(len(users) or 1, service.recommend, users, seeds, k, exclude, internal)

    @app.post("/recommend", summary="Top-k items of many users (JSON body)")
    async def recommend_post(body: dict = Body(..., examples=[{"users": ["1", "2"], "k": 20}])):
        users, items = body.get("users", []), body.get("items")
        k, exclude, ids = body.get("k", 20), body.get("exclude", "train"), body.get("ids", "raw")
        if not (isinstance(users, list) and all(isinstance(user, (str, int)) for user in users)):
            return JSONResponse({"error": "users: expected a list of IDs"}, status_code=422)
        if items is not None and not (isinstance(items, list) and all(
                isinstance(entry, list) and all(isinstance(item, (str, int)) for item in entry) for entry in items)):
            return JSONResponse({"error": "items: expected a list of item-ID lists, one per new user"},
                                status_code=422)
        if not isinstance(k, int) or isinstance(k, bool) or not isinstance(exclude, str):
            return JSONResponse({"error": "k must be an integer and exclude a string"}, status_code=422)
        seeds = None if items is None else [[str(item) for item in entry] for entry in items]
        users = list(dict.fromkeys(str(user) for user in users))
        return await answer(len(users) + len(seeds or ()), service.recommend, users, seeds, k, exclude, _ids_kind(ids))

    @app.get("/similar-items", summary="Items whose vectors are most similar (cosine) to one item")
    async def similar_items(item: str = Query(..., description="item ID"), k: int = Query(default=10),
                            ids: str = Query(default="raw", description="raw (default) or internal")):
        return await answer(1, service.similar, item, k, _ids_kind(ids))

    @app.get("/health", summary="The process is up")
    async def health():
        return {"status": "ok"}

    @app.get("/ready", summary="The index is loaded: what is served")
    async def ready():
        return {"ready": True, **service.description()}

    @app.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def prometheus():
        content, media_type = metrics.render()
        return Response(content, media_type=media_type)

    app.add_middleware(_Guard, limits=config.limits, metrics=metrics)
    return app


def _ids_kind(ids: str) -> bool:
    """Whether ``ids`` asks for internal IDs (raw is the default)."""
    if ids not in ("raw", "internal"):
        raise RequestProblem(400, f"ids must be raw or internal; got {ids!r}")
    return ids == "internal"

