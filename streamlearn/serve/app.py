"""HTTP endpoints (Starlette): KServe v2, v1 ``:predict``, health, ``/metrics`` and admin.

Inference runs inline on the event loop: the models are small MLPs whose onnxruntime call
takes tens of microseconds, less than a hop to a thread pool would cost. Each handler reads the
runtime's served state once, so a swap mid-request cannot mix two versions. Every client error
is a 4xx ``{"error": "..."}``; a client that disconnects mid-request is counted under status
499 and logged in one line; only a genuine bug answers 500, and that is counted.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from streamlearn import __version__
from streamlearn.errors import ArtifactError, RegistryError
from streamlearn.export.artifact import ModelBundle
from streamlearn.serve.codec import (
    HEADER_LENGTH,
    parse_body,
    parse_instances,
    parse_v2,
    v2_response,
)
from streamlearn.serve.inference import check_finite, infer
from streamlearn.serve.limits import RequestLimits
from streamlearn.serve.runtime import Served, ServingRuntime
from streamlearn.serve.tensors import ApiError
from streamlearn.settings import ServeSettings

__all__ = ["build_app", "describe_model", "served_model"]

log = logging.getLogger(__name__)
Handler = Callable[[Request], Awaitable[Response]]

EXTENSIONS = ["binary_tensor_data"]  # KServe v2 extensions this server implements
CLIENT_CLOSED = 499  # status recorded for a client that left mid-request (nginx's convention)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refusing more than ``limit`` bytes before reading them all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body over {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def build_app(runtime: ServingRuntime, settings: ServeSettings, *, watch: bool = True) -> Starlette:
    """The ASGI app; with ``watch`` the runtime's watcher runs for the app's lifetime."""
    metrics, name = runtime.metrics, settings.model_name
    token = settings.admin_token.get_secret_value().encode() if settings.admin_token else None

    def endpoint(label: str) -> Callable[[Handler], Handler]:
        """Time and count a handler; turn ApiError into its 4xx JSON answer."""

        def wrap(handler: Handler) -> Handler:
            async def run(request: Request) -> Response:
                start = time.perf_counter()
                try:
                    response = await handler(request)
                except ApiError as exc:
                    response = _error(exc.status, exc.message)
                except ClientDisconnect:  # nobody is left to answer: count it, one log line
                    log.info("%s %s: client disconnected mid-request", label, request.url.path)
                    response = Response(status_code=CLIENT_CLOSED)
                metrics.observe_request(label, response.status_code, time.perf_counter() - start)
                return response

            return run

        return wrap

    def model(request: Request) -> Served:
        """The served state for the route's model name and version (see served_model)."""
        params = request.path_params
        return served_model(runtime, name, params["name"], params.get("version"))

    # -- health and metadata --------------------------------------------------------------
    @endpoint("live")
    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    @endpoint("ready")
    async def ready(request: Request) -> Response:
        bundle = runtime.state.bundle
        if bundle is None:
            return JSONResponse({"ready": False, "error": "no model loaded yet"}, 503)
        return JSONResponse({"ready": True, "model_version": str(bundle.version)})

    @endpoint("server_metadata")
    async def server_metadata(request: Request) -> Response:
        return JSONResponse(
            {"name": "streamlearn", "version": __version__, "extensions": EXTENSIONS}
        )

    @endpoint("model_metadata")
    async def model_metadata(request: Request) -> Response:
        bundle = model(request).bundle
        assert bundle is not None
        return JSONResponse(describe_model(name, bundle))

    @endpoint("model_ready")
    async def model_ready(request: Request) -> Response:
        served = model(request)
        assert served.bundle is not None
        return JSONResponse(
            {"name": name, "ready": True, "model_version": str(served.bundle.version)}
        )

    # -- inference ------------------------------------------------------------------------
    @endpoint("v2_infer")
    async def v2_infer(request: Request) -> Response:
        served = model(request)
        assert served.bundle is not None
        body = await _read_body(request, settings.max_body_bytes)
        req = parse_v2(body, request.headers.get(HEADER_LENGTH), served.bundle, settings.max_batch)
        content, headers = v2_response(name, req, infer(runtime, served, req))
        return Response(content, headers=headers)

    @endpoint("v1_predict")
    async def predict(request: Request) -> Response:
        served = model(request)
        bundle = served.bundle
        assert bundle is not None
        rows = parse_instances(
            parse_body(await _read_body(request, settings.max_body_bytes)), settings.max_batch
        )
        num, cat = bundle.encode(rows)
        prediction, hidden, compensated = runtime.predict(served, num, cat)
        check_finite(prediction, hidden)
        body: dict[str, Any] = {"model_version": str(bundle.version), "compensated": compensated}
        if bundle.regression:
            body["predictions"] = prediction.astype(float).tolist()
        else:
            body["predictions"] = prediction[:, : len(bundle.classes)].astype(float).tolist()
            body["classes"] = bundle.classes
        return JSONResponse(body)

    # -- operations -----------------------------------------------------------------------
    async def prometheus(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    def authorize(request: Request) -> None:
        if token is None:
            raise ApiError(
                403, "admin endpoints are disabled; set serve.admin_token to enable them"
            )
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token):
            raise ApiError(401, "admin endpoints need 'Authorization: Bearer <serve.admin_token>'")

    def status() -> dict[str, Any]:
        """What the admin endpoints answer: the registry pointer at the runtime's last look,
        the version served (they differ while the pointer names a refused artifact) and the
        refused versions with their reasons."""
        bundle = runtime.state.bundle
        return {
            "pointer": runtime.pointer,
            "model_version": None if bundle is None else bundle.version,
            "refused": {str(v): r for v, r in runtime.refused.items()},
        }

    @endpoint("admin_reload")
    async def reload(request: Request) -> Response:
        authorize(request)
        await run_in_threadpool(runtime.reload)
        return JSONResponse(status())

    @endpoint("admin_rollback")
    async def rollback(request: Request) -> Response:
        authorize(request)
        raw = await _read_body(request, 4096)
        payload = parse_body(raw) if raw.strip() else {}
        version = payload.get("version") if isinstance(payload, dict) else None
        if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
            raise ApiError(
                400, '"version" must be an integer (or leave it out for the previous one)'
            )
        try:
            await run_in_threadpool(runtime.rollback, version)
        except ArtifactError as exc:  # the pointer did not move
            body = {"error": f"rollback refused: {exc}", "reason": exc.reason, **status()}
            return JSONResponse(body, 409)
        except RegistryError as exc:
            raise ApiError(409, f"rollback impossible: {exc}") from None
        return JSONResponse(status())

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, str(exc.detail), exc.headers)

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path, exc_info=exc)
        metrics.observe_request("error", 500, 0.0)
        return _error(500, "internal server error")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if watch:
            runtime.start()
        try:
            yield
        finally:
            if watch:
                runtime.stop()

    routes = [
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/v2", server_metadata),
        Route("/v2/models/{name}", model_metadata),
        Route("/v2/models/{name}/ready", model_ready),
        Route("/v2/models/{name}/infer", v2_infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}", model_metadata),
        Route("/v2/models/{name}/versions/{version}/ready", model_ready),
        Route("/v2/models/{name}/versions/{version}/infer", v2_infer, methods=["POST"]),
        Route("/v1/models/{name}:predict", predict, methods=["POST"]),
        Route("/metrics", prometheus),
        Route("/admin/reload", reload, methods=["POST"]),
        Route("/admin/rollback", rollback, methods=["POST"]),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(RequestLimits, settings=settings, metrics=metrics)],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )


def served_model(runtime: ServingRuntime, name: str, asked: str, version: str | None) -> Served:
    """The served state, read once, for a request naming model ``asked`` (and ``version``, if
    it names one): 404 for other names and versions, 503 before a model is loaded. The one
    lookup of every transport (HTTP routes, gRPC messages), so they answer alike."""
    if asked != name:
        raise ApiError(404, f"unknown model {asked!r}; this server serves {name!r}")
    served = runtime.state
    if served.bundle is None:
        raise ApiError(503, "no model loaded yet; the worker has not published one")
    if version is not None and version != str(served.bundle.version):
        raise ApiError(
            404,
            f"version {version!r} of {name!r} is not served; version {served.bundle.version} is",
        )
    return served


def describe_model(name: str, bundle: ModelBundle) -> dict[str, Any]:
    """The v2 model metadata of the served ``bundle`` (HTTP's JSON; gRPC's message from it)."""
    meta = bundle.meta
    return {
        "name": name,
        "versions": [str(bundle.version)],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": k, **v} for k, v in meta.get("inputs", {}).items()],
        "outputs": [{"name": k, **v} for k, v in meta.get("outputs", {}).items()],
        "parameters": {
            "task": meta["task"],
            "classes": bundle.classes,
            "created": meta.get("created"),
            "sha256": bundle.sha256,
        },
    }
