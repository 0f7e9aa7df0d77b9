"""Request bodies -> typed specs, through the config loader's own validation.

Keys are matched case-insensitively (``config.normalize_keys``); problems come
back as ``body: field.path: reason, got value`` lines.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel

from controlloop.config import (
    ConfigError,
    LoadedConfig,
    Section,
    _find_key,
    _fix_priorities,
    parse_system_document,
    validate_section,
)
from controlloop.server.errors import ApiError, from_config_error, invalid
from controlloop.specs import OptimizerData, OptimizerSpec

M = TypeVar("M", bound=BaseModel)


def parse(
    model: type[M],
    raw: Any,
    *,
    where: str = "body",
    prefix: tuple[str | int, ...] = (),
    warnings: list[str] | None = None,
) -> M:
    """Validate ``raw`` as ``model``; 400 with one line per problem.

    Out-of-range class priorities are accepted as 100 with a warning, as in config files.
    """
    raw = copy.deepcopy(raw)  # the priority fix-up edits in place
    fixed = _fix_class_priorities(raw, prefix)
    if warnings is not None:
        warnings.extend(fixed)
    spec, problems = validate_section(
        Section(model.__name__, model, (), True), raw, where=where, prefix=prefix
    )
    if problems or spec is None:
        raise invalid(problems or [f"{where}: invalid"])
    return spec  # type: ignore[return-value]


def _fix_class_priorities(raw: Any, prefix: tuple[str | int, ...]) -> list[str]:
    """Priorities outside 1..100 become 100, as in config files (same helper)."""
    if not isinstance(raw, dict):
        return []
    key = _find_key(raw, "serviceClasses")
    if key is not None:
        return _fix_priorities(raw[key], where="body", path=(*prefix, key))
    if _find_key(raw, "priority") is not None and _find_key(raw, "name") is not None:
        return _fix_priorities([raw], where="body", path=prefix)
    return []


def parse_system(doc: Any, *, where: str = "body") -> LoadedConfig:
    """A ``{"system": {...}}`` document (wrapper optional), fully cross-checked."""
    try:
        return parse_system_document(doc, where=where)
    except ConfigError as exc:
        raise from_config_error(exc, "invalid system") from None


def parse_optimizer_options(raw: Any, base: OptimizerSpec) -> OptimizerSpec:
    """``{"optimizer": {...}}`` or the bare options; fields not given keep ``base``'s value."""
    if raw is None:
        return base
    if not isinstance(raw, Mapping):
        raise invalid(
            [
                "body: (top level): expected a mapping of optimizer options,"
                f" got {type(raw).__name__}"
            ]
        )
    if _find_key(raw, "optimizer") is not None:
        options = parse(OptimizerData, raw).optimizer
    else:
        options = parse(OptimizerSpec, raw)
    return merge_options(base, options)


def merge_options(base: OptimizerSpec, given: OptimizerSpec) -> OptimizerSpec:
    update = {name: getattr(given, name) for name in given.model_fields_set}
    return base.model_copy(update=update)


def name_from(raw: Any, field: str, given: str | None) -> str:
    """A name from the path/query (``given``) or from the body's ``field``."""
    if given:
        return given
    if isinstance(raw, Mapping):
        key = _find_key(raw, field)
        value = raw.get(key) if key is not None else None
        if isinstance(value, str) and value.strip():
            return value.strip()
        if key is not None:
            raise invalid([f"body: {field}: expected a non-empty string, got {json.dumps(value)}"])
    raise ApiError(400, f"missing '{field}': give it in the path, as ?{field}=, or in the body")
