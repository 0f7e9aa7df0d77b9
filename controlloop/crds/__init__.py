"""Custom resources for the static specs (group ``controlloop.io``, version ``v1alpha1``).

Pure functions, no I/O:

* :func:`crd_documents` builds the CustomResourceDefinitions; their OpenAPI v3 schemas are
  generated from the same pydantic models the files are validated with, so the API server
  enforces the enums, minimums and required fields the loader does and the two cannot drift
  (``manifests/crds/`` holds the rendered copies; a unit test keeps them in sync);
* :func:`system_to_crs` turns a :class:`~controlloop.specs.SystemSpec` (any config form) into
  resources, :func:`crs_to_system` turns resources back into the same system, with every
  problem named ``Kind/name: spec.path: what, got value``.

Why our own group rather than the seed's ``inferno.platform.ai``: we do not own that domain and
our kinds differ from the seed's (a Model carries all its perf rows, the Optimizer carries the
loop settings and the solution), so clusters running both must not collide.

Kubernetes names are DNS-1123 (lower case, no ``_``), spec names are not (``granite_13b``,
``2xA100``): a resource's name is the spec name made DNS-safe, and ``spec.name`` carries the
exact name when the two differ.
"""

from __future__ import annotations

from typing import Any

from controlloop.config import ConfigError
from controlloop.crds.convert import (
    CrConfigError,
    CrSpecs,
    canonical,
    crs_to_system,
    dns_name,
    ref,
    system_to_crs,
)
from controlloop.crds.schema import (
    API_VERSION,
    DEFAULT_OPTIMIZER,
    GROUP,
    KIND_BY_NAME,
    KINDS,
    VERSION,
    Kind,
    crd_document,
    crd_documents,
    dump_yaml,
    openapi_schema,
    write_definitions,
)
from controlloop.crds.status import condition, optimizer_status

__all__ = [
    "API_VERSION", "DEFAULT_OPTIMIZER", "GROUP", "KINDS", "KIND_BY_NAME", "VERSION",
    "CrConfigError", "CrSpecs", "Kind", "canonical", "cmd_export_crs", "condition",
    "crd_document", "crd_documents", "crs_to_system", "dns_name", "dump_yaml",
    "openapi_schema", "optimizer_status", "ref", "system_to_crs", "write_definitions",
]


# --- command (the only I/O here) --------------------------------------------------------------


def cmd_export_crs(args: Any) -> int:
    """``controlloop export-crs PATH``: the resources of a config on stdout."""
    import sys
    from pathlib import Path

    from controlloop.config import load_config
    from controlloop.loop.settings import controller_file, load_controller_settings

    if args.definitions:
        sys.stdout.write(dump_yaml(crd_documents()))
        return 0
    if args.path is None:
        raise ConfigError(["export-crs: give a config PATH (or --definitions)"])
    path = Path(args.path)
    loaded = load_config(path)
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    settings = None
    if path.is_dir() and controller_file(path) is not None:
        settings = load_controller_settings(path)
    sys.stdout.write(dump_yaml(system_to_crs(
        loaded.system, namespace=args.namespace, settings=settings,
        optimizer_name=args.optimizer_name, include_servers=not args.no_servers)))
    return 0


