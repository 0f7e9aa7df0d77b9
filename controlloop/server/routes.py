"""The reference server's verbs on the stored system (set*/get*/add*/remove*).

Names come from the path (``/getAccelerator/{name}``) or the query
(``/getAccelerator?name=…``); remove* answer GET, POST and DELETE, as clients of
the gin server used all three.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import Enum
from typing import Any

from fastapi import APIRouter, Request

from controlloop.server.context import ApiContext
from controlloop.server.errors import ApiError, read_json
from controlloop.server.payloads import name_from, parse
from controlloop.server.state import (
    ACCELERATORS,
    CAPACITIES,
    MODELS,
    SERVERS,
    SERVICE_CLASSES,
    Collection,
    add_class_targets,
    add_model,
    find,
    remove,
    remove_class_target,
    remove_model,
    set_all,
    upsert,
)
from controlloop.specs import ServiceClassSpec

REMOVE_METHODS = ("GET", "POST", "DELETE")


def _with_warnings(doc: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
    return {**doc, "warnings": warnings} if warnings else doc


def _paths(verb: str, params: tuple[str, ...]) -> list[str]:
    """``/verb/{a}/{b}`` and ``/verb`` (the names then come from the query)."""
    return [f"/{verb}" + "".join(f"/{{{p}}}" for p in params), f"/{verb}"]


def _route(
    router: APIRouter,
    verb: str,
    params: tuple[str, ...],
    methods: tuple[str, ...],
    handler: Callable[..., Any],
    **kw: Any,
) -> None:
    for path in _paths(verb, params):
        for method in methods:
            router.add_api_route(
                path, handler, methods=[method], operation_id=_op_id(verb, path, method), **kw
            )


def _op_id(verb: str, path: str, method: str) -> str:
    suffix = "" if path.count("/") > 1 else "_query"
    return f"{verb}{suffix}_{method.lower()}"


def collection_routes(
    router: APIRouter,
    ctx: ApiContext,
    coll: Collection,
    *,
    plural: str,
    singular: str,
    params: tuple[str, ...] = ("name",),
    add_verb: str | None = None,
    with_add: bool = True,
) -> None:
    """set<Plural>, get<Plural>, get<Singular>, add<Singular>, remove<Singular>."""
    tag: list[str | Enum] = [coll.wrapper]

    async def set_all_items(request: Request) -> dict[str, Any]:
        ctx.require_stateful(f"set{plural}")
        warnings: list[str] = []
        spec = parse(coll.list_model, await read_json(request), warnings=warnings)
        items = getattr(spec, coll.list_attr)
        snap, more = ctx.store.update(set_all(coll, items))
        return _with_warnings(_list_doc(coll, snap.system), warnings + more)

    def get_all() -> dict[str, Any]:
        return _list_doc(coll, ctx.store.snapshot.system)

    async def add_item(request: Request) -> dict[str, Any]:
        ctx.require_stateful(add_verb or f"add{singular}")
        warnings: list[str] = []
        item = parse(coll.item_model, await read_json(request), warnings=warnings)
        _, more = ctx.store.update(upsert(coll, item))
        return _with_warnings(item.to_json_dict(), warnings + more)

    router.add_api_route(
        f"/set{plural}",
        set_all_items,
        methods=["POST"],
        tags=tag,
        summary=f"Replace all {coll.wrapper}",
        openapi_extra=ctx.body(coll.list_model),
    )
    router.add_api_route(
        f"/get{plural}", get_all, methods=["GET"], tags=tag, summary=f"All {coll.wrapper}"
    )
    if with_add:
        router.add_api_route(
            f"/{add_verb or 'add' + singular}",
            add_item,
            methods=["POST"],
            tags=tag,
            summary=f"Add or replace one {coll.what}",
            openapi_extra=ctx.body(coll.item_model),
        )
    if params == ("name",):

        def get_one(name: str) -> dict[str, Any]:
            return find(coll, ctx.store.snapshot.system, (name,)).to_json_dict()  # type: ignore[no-any-return]

        def remove_one(name: str) -> dict[str, Any]:
            ctx.require_stateful(f"remove{singular}")
            item = find(coll, ctx.store.snapshot.system, (name,))
            ctx.store.update(remove(coll, (name,)))
            return item.to_json_dict()  # type: ignore[no-any-return]

        _route(router, f"get{singular}", params, ("GET",), get_one, tags=tag)
        _route(router, f"remove{singular}", params, REMOVE_METHODS, remove_one, tags=tag)


def _list_doc(coll: Collection, system: Any) -> dict[str, Any]:
    return {coll.wrapper: [item.to_json_dict() for item in coll.get(system)]}


def build_router(ctx: ApiContext) -> APIRouter:
    router = APIRouter()
    collection_routes(router, ctx, ACCELERATORS, plural="Accelerators", singular="Accelerator")
    collection_routes(
        router, ctx, CAPACITIES, plural="Capacities", singular="Capacity", add_verb="setCapacity"
    )
    collection_routes(router, ctx, SERVERS, plural="Servers", singular="Server")
    collection_routes(
        router,
        ctx,
        SERVICE_CLASSES,
        plural="ServiceClasses",
        singular="ServiceClass",
        with_add=False,
    )
    collection_routes(
        router,
        ctx,
        MODELS,
        plural="Models",
        singular="ModelAcceleratorPerf",
        params=("name", "acc"),
        add_verb="addModelAcceleratorPerf",
    )
    _model_routes(router, ctx)
    _perf_routes(router, ctx)
    _class_routes(router, ctx)
    return router


def _model_routes(router: APIRouter, ctx: ApiContext) -> None:
    tag: list[str | Enum] = ["models"]

    def get_model(name: str) -> dict[str, Any]:
        snap = ctx.store.snapshot
        if name not in snap.model_names():
            raise ApiError(404, f"unknown model '{name}'")
        perf = [m.to_json_dict() for m in snap.system.models if m.name == name]
        return {"name": name, "models": perf}

    async def add_model_route(request: Request, name: str | None = None) -> dict[str, Any]:
        ctx.require_stateful("addModel")
        raw = await read_json(request, required=False)
        model = name_from(raw, "name", name)
        ctx.store.update(add_model(model))
        return {"name": model}

    def remove_model_route(name: str) -> dict[str, Any]:
        ctx.require_stateful("removeModel")
        removed = get_model(name)
        ctx.store.update(remove_model(name))
        return removed

    _route(router, "getModel", ("name",), ("GET",), get_model, tags=tag)
    body = ctx.body(
        {"type": "object", "properties": {"name": {"type": "string", "minLength": 1}}},
        required=False,
    )
    _route(router, "addModel", ("name",), ("POST",), add_model_route, tags=tag, openapi_extra=body)
    _route(router, "removeModel", ("name",), REMOVE_METHODS, remove_model_route, tags=tag)


def _perf_routes(router: APIRouter, ctx: ApiContext) -> None:
    tag: list[str | Enum] = ["models"]

    def get_perf(name: str, acc: str) -> dict[str, Any]:
        return find(MODELS, ctx.store.snapshot.system, (name, acc)).to_json_dict()  # type: ignore[no-any-return]

    def remove_perf(name: str, acc: str) -> dict[str, Any]:
        ctx.require_stateful("removeModelAcceleratorPerf")
        item = find(MODELS, ctx.store.snapshot.system, (name, acc))
        ctx.store.update(remove(MODELS, (name, acc)))
        return item.to_json_dict()  # type: ignore[no-any-return]

    _route(router, "getModelAcceleratorPerf", ("name", "acc"), ("GET",), get_perf, tags=tag)
    _route(
        router, "removeModelAcceleratorPerf", ("name", "acc"), REMOVE_METHODS, remove_perf, tags=tag
    )


def _class_routes(router: APIRouter, ctx: ApiContext) -> None:
    tag: list[str | Enum] = ["serviceClasses"]

    async def add_class(
        request: Request, name: str | None = None, priority: str | None = None
    ) -> dict[str, Any]:
        ctx.require_stateful("addServiceClass")
        raw = await read_json(request, required=False)
        doc: Any = raw if raw is not None else {}
        if name is not None:
            if not isinstance(doc, dict):
                doc = {}
            doc = {**doc, "name": name}
            if priority is not None:
                # A path segment is text; a number is a number, anything else fails validation.
                whole = re.fullmatch(r"\s*[+-]?[0-9]+\s*", priority)
                doc["priority"] = int(priority) if whole else priority
        warnings: list[str] = []
        spec = parse(ServiceClassSpec, doc, warnings=warnings)
        old = ctx.store.snapshot.system.service_class(spec.name)
        if old is not None and "model_targets" not in spec.model_fields_set:
            spec = spec.model_copy(update={"model_targets": old.model_targets})
        _, more = ctx.store.update(upsert(SERVICE_CLASSES, spec))
        return _with_warnings(spec.to_json_dict(), warnings + more)

    async def add_targets(request: Request) -> dict[str, Any]:
        ctx.require_stateful("addServiceClassModelTargets")
        warnings: list[str] = []
        spec = parse(ServiceClassSpec, await read_json(request), warnings=warnings)
        snap, more = ctx.store.update(add_class_targets(spec))
        cls = snap.system.service_class(spec.name)
        doc = cls.to_json_dict() if cls is not None else {}
        return _with_warnings(doc, warnings + more)

    def get_target(name: str, model: str) -> dict[str, Any]:
        cls = find(SERVICE_CLASSES, ctx.store.snapshot.system, (name,))
        target = cls.target(model)
        if target is None:
            raise ApiError(404, f"unknown model target '{model}' in service class '{name}'")
        return target.to_json_dict()  # type: ignore[no-any-return]

    def remove_target(name: str, model: str) -> dict[str, Any]:
        ctx.require_stateful("removeServiceClassModelTarget")
        target = get_target(name, model)
        ctx.store.update(remove_class_target(name, model))
        return target

    class_body = ctx.body(ServiceClassSpec, required=False)
    for path in (
        "/addServiceClass/{name}/{priority}",
        "/addServiceClass/{name}",
        "/addServiceClass",
    ):
        router.add_api_route(
            path,
            add_class,
            methods=["POST"],
            tags=tag,
            openapi_extra=class_body,
            operation_id="addServiceClass" + path.count("/") * "_",
            summary="Add a service class (or set its priority)",
        )
    router.add_api_route(
        "/addServiceClassModelTargets",
        add_targets,
        methods=["POST"],
        tags=tag,
        openapi_extra=ctx.body(ServiceClassSpec),
        summary="Add or replace targets of a class",
    )
    _route(router, "getServiceClassModelTarget", ("name", "model"), ("GET",), get_target, tags=tag)
    _route(
        router,
        "removeServiceClassModelTarget",
        ("name", "model"),
        REMOVE_METHODS,
        remove_target,
        tags=tag,
    )
