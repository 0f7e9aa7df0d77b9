"""FastAPI app of ``controlloop serve``: the reference (inferno) server's REST API.

Stateless (default): ``POST /optimizeOne`` takes a whole system and returns the
solution; get* then show the system of the last call. Stateful (``--stateful``):
the system lives in the server and the set*/add*/remove* verbs edit it.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi

from controlloop import __version__
from controlloop.optimizer.api import optimize
from controlloop.optimizer.solution import Solution
from controlloop.server.context import ApiContext
from controlloop.server.errors import ApiError, install_handlers, invalid, read_json
from controlloop.server.limits import Limits
from controlloop.server.metrics import CONTENT_TYPE
from controlloop.server.payloads import parse, parse_optimizer_options, parse_system
from controlloop.server.routes import build_router
from controlloop.server.state import Store
from controlloop.server.whatif import WhatIfOverrides, WhatIfRequest, apply_overrides, diff
from controlloop.specs import OptimizerData, SystemSpec

log = logging.getLogger(__name__)

SYSTEM_BODY: dict[str, Any] = {
    "type": "object",
    "description": '{"system": {acceleratorData, capacityData, modelData, serviceClassData, '
    "serverData, optimizerData}} as in config/examples/scenarios/*.json",
    "properties": {"system": {"type": "object"}},
}


OPEN_PATHS = ("/healthz", "/readyz")  # probes answer without a token


def create_app(
    *, stateful: bool = False, system: SystemSpec | None = None, token: str | None = None,
    limits: Limits | None = None,
) -> FastAPI:
    """The API; ``system`` preloads the stored system (stateful) or the last-held one;
    ``token``: every request but the probes needs ``Authorization: Bearer <token>``;
    ``limits``: body size, work per request and time (default :class:`Limits`)."""
    store = Store()
    if system is not None:
        store.replace_system(system)
    ctx = ApiContext(store=store, stateful=stateful, limits=limits or Limits())
    app = FastAPI(
        title="controlloop optimizer API",
        version=__version__,
        description="REST API of the reference (inferno) optimizer server. "
        f"Mode: {'stateful' if stateful else 'stateless'}. See docs/rest-api.md.",
    )
    app.state.ctx = ctx
    install_handlers(app)
    _install_metrics_middleware(app, ctx)
    if token:
        _install_token_check(app, token)
    _optimize_routes(app, ctx)
    app.include_router(build_router(ctx))
    _install_openapi(app, ctx)
    return app


def _install_token_check(app: FastAPI, token: str) -> None:
    import hmac

    from fastapi.responses import JSONResponse

    expected = token.encode()

    @app.middleware("http")
    async def check_token(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if request.url.path in OPEN_PATHS:
            return await call_next(request)
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                                 expected):
            return JSONResponse({"error": "a valid bearer token is required"}, status_code=401,
                                headers={"WWW-Authenticate": 'Bearer realm="controlloop"'})
        return await call_next(request)


def read_token(path: str) -> str:
    """The token of ``--token-file``; a clear error when unreadable or empty."""
    from pathlib import Path

    from controlloop.config import ConfigError

    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError([f"--token-file {path}: cannot read: {exc.strerror or exc}"]) from None
    if not token:
        raise ConfigError([f"--token-file {path}: the file is empty"])
    return token


def _install_metrics_middleware(app: FastAPI, ctx: ApiContext) -> None:
    @app.middleware("http")
    async def count_requests(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            endpoint = getattr(route, "path", None) or "(unmatched)"
            ctx.metrics.requests.labels(endpoint, request.method, str(status)).inc()


def _install_openapi(app: FastAPI, ctx: ApiContext) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(ctx.schemas)  # $defs of the hand-validated request bodies
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _run_optimizer(ctx: ApiContext, system: SystemSpec, endpoint: str) -> Solution:
    ctx.limits.check_work(system)  # 422 before any memory is spent
    t0 = time.perf_counter()
    # the MILP stops in time for the request's own limit (sizing and the rest fit in 20 %)
    limit = min(system.optimizer.time_limit, 0.8 * ctx.limits.request_seconds)
    solution = optimize(system, time_limit=limit)
    ctx.metrics.optimize_seconds.labels(endpoint).observe(time.perf_counter() - t0)
    ctx.metrics.last_total_cost.set(solution.total_cost)
    return solution


def _optimize_routes(app: FastAPI, ctx: ApiContext) -> None:
    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, Any]:
        snap = ctx.store.snapshot
        return {
            "status": "ok",
            "mode": "stateful" if ctx.stateful else "stateless",
            "version": snap.version,
            "servers": len(snap.system.servers),
        }

    @app.get("/metrics", tags=["health"], response_class=Response)
    def metrics() -> Response:
        return Response(ctx.metrics.render(), media_type=CONTENT_TYPE)

    @app.post("/optimizeOne", tags=["optimize"], openapi_extra=ctx.body(SYSTEM_BODY))
    async def optimize_one(request: Request) -> dict[str, Any]:
        """Optimize the system in the body; stateless mode remembers it for get*."""
        raw = await read_json(request)

        def work() -> dict[str, Any]:
            loaded = parse_system(raw)
            solution = _run_optimizer(ctx, loaded.system, "optimizeOne")
            if not ctx.stateful:
                ctx.store.replace_system(loaded.system)
            return {**solution.to_json(), "warnings": loaded.warnings}

        return await ctx.slots.run(work, seconds=ctx.limits.request_seconds)

    @app.post("/optimize", tags=["optimize"], openapi_extra=ctx.body(OptimizerData, required=False))
    async def optimize_stored(request: Request) -> dict[str, Any]:
        """Optimize the stored system; options in the body override the stored ones."""
        raw = await read_json(request, required=False)
        snap = ctx.store.snapshot  # one consistent version for the whole run
        if not ctx.stateful and snap.version == 0:
            raise ApiError(
                409,
                "no system yet: POST /optimizeOne first, or start with "
                "--stateful (and --config) to keep one in the server",
            )
        options = parse_optimizer_options(raw, snap.system.optimizer)
        system = snap.system.model_copy(update={"optimizer": options})
        solution = await ctx.slots.run(
            lambda: _run_optimizer(ctx, system, "optimize"), seconds=ctx.limits.request_seconds
        )
        return solution.to_json()

    @app.post(
        "/whatif",
        tags=["optimize"],
        openapi_extra=ctx.body(
            {
                "type": "object",
                "properties": {
                    "system": SYSTEM_BODY,
                    "overrides": {"$ref": "#/components/schemas/WhatIfOverrides"},
                },
            },
            required=True,
        ),
    )
    async def whatif(request: Request) -> dict[str, Any]:
        """Baseline vs. overridden plan of a system (body's, stored, or last held)."""
        raw = await read_json(request)
        if not isinstance(raw, dict):
            raise invalid([f"body: (top level): expected a mapping, got {type(raw).__name__}"])
        req = parse(WhatIfRequest, raw)
        overrides = parse(WhatIfOverrides, req.overrides or {}, prefix=("overrides",))

        def work() -> dict[str, Any]:
            warnings: list[str] = []
            if req.system is not None:
                loaded = parse_system({"system": req.system})
                base, warnings = loaded.system, loaded.warnings
            else:
                base = ctx.store.snapshot.system
            changed = apply_overrides(base, overrides)
            before = _run_optimizer(ctx, base, "whatif")
            after = _run_optimizer(ctx, changed, "whatif")
            return {
                "baseline": before.to_json(),
                "whatif": after.to_json(),
                "diff": diff(before, after),
                "totalCostDelta": round(after.total_cost - before.total_cost, 6),
                "warnings": warnings,
            }

        return await ctx.slots.run(work, seconds=ctx.limits.request_seconds)

    ctx.schemas["WhatIfOverrides"] = WhatIfOverrides.model_json_schema(
        by_alias=True, ref_template="#/components/schemas/{model}"
    )
    ctx.schemas.update(ctx.schemas["WhatIfOverrides"].pop("$defs", {}))


def cmd_serve(args: argparse.Namespace) -> int:
    """``controlloop serve``: run uvicorn in the foreground until interrupted."""
    import uvicorn

    from controlloop.config import load_config

    system = None
    source = "empty"
    if args.config is not None:
        loaded = load_config(args.config)  # ConfigError -> one line per problem, exit 2
        for warning in loaded.warnings:
            log.warning("%s", warning)
        system, source = loaded.system, str(args.config)
    from controlloop.config import ConfigError

    token_file = getattr(args, "token_file", None)
    cert, key = getattr(args, "tls_cert", None), getattr(args, "tls_key", None)
    if bool(cert) != bool(key):
        raise ConfigError(["--tls-cert and --tls-key go together"])
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        if path and not os.path.isfile(path):
            raise ConfigError([f"{flag} {path}: no such file"])
    token = read_token(token_file) if token_file else None
    app = create_app(stateful=args.stateful, system=system, token=token)
    mode = "stateful" if args.stateful else "stateless"
    scheme = "https" if cert else "http"
    log.info(
        "serving the optimizer REST API on %s://%s:%d (%s mode, system: %s, %d servers, %s); "
        "docs at /docs",
        scheme,
        args.host,
        args.port,
        mode,
        source,
        len(system.servers) if system else 0,
        "token required" if token else "no auth",
    )
    if not token and args.host not in ("localhost", "127.0.0.1", "::1"):
        log.warning("serving on %s without --token-file: anyone who reaches the port may "
                    "use the API", args.host)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        ssl_certfile=cert,
        ssl_keyfile=key,
        log_config=None,
        # uvicorn's own start-up chatter only at debug: our line above says it all.
        log_level="debug" if getattr(args, "log_level", "info") == "debug" else "warning",
        access_log=False,
    )
    uvicorn.Server(config).run()
    return 0
