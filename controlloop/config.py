"""Load and validate static specs into :class:`controlloop.specs.SystemSpec`.

Three input forms, all into the same typed specs:

* a directory of the reference JSON files (``accelerator-data.json``, …);
* one JSON or YAML file ``{"system": {"acceleratorData": …, …}}``;
* a directory of our YAML files (``accelerators.yaml``, ``capacity.yaml``,
  ``models.yaml``, ``service-classes.yaml``, ``servers.yaml``,
  ``optimizer.yaml``), each with the same top-level key as its JSON twin.

Keys are matched case-insensitively and ignoring ``-``/``_`` (the reference
files were written for such a decoder: ``AvgInTokens``, ``milpsolver``).
Every problem is reported as one line ``file: field.path: what, got value``.
"""

from __future__ import annotations

import difflib
import json
import logging
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from controlloop import jsonout
from controlloop.config_keys import (  # re-exported: callers import them from here
    _clip_key,
    _field_keys,
    _fold,
    _path_str,
    normalize_keys,
)
from controlloop.gcpause import gc_paused
from controlloop.specs import (
    LOWEST_PRIORITY,
    AcceleratorData,
    CapacitySpec,
    ModelData,
    OptimizerData,
    ServerData,
    ServiceClassData,
    SystemSpec,
)

log = logging.getLogger(__name__)


class ConfigError(Exception):
    """Invalid user input (files, flags, variables): the CLI exits 2. Each entry of
    ``problems`` is one self-contained line naming where and what."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


class StartupError(Exception):
    """The environment failed us at start-up (an API server unreachable, a port taken):
    not the user's input, so the CLI exits 1, not 2."""


@dataclass(frozen=True)
class Section:
    key: str  # key under "system" in the one-file form
    model: type[BaseModel]
    files: tuple[str, ...]  # accepted file names in a directory, first = our YAML name
    required: bool


SECTIONS: tuple[Section, ...] = (
    Section(
        "acceleratorData",
        AcceleratorData,
        ("accelerators.yaml", "accelerators.yml", "accelerator-data.json", "accelerator-data.yaml"),
        True,
    ),
    Section(
        "capacityData",
        CapacitySpec,
        ("capacity.yaml", "capacity.yml", "capacity-data.json", "capacity-data.yaml"),
        False,
    ),
    Section(
        "modelData",
        ModelData,
        ("models.yaml", "models.yml", "model-data.json", "model-data.yaml"),
        True,
    ),
    Section(
        "serviceClassData",
        ServiceClassData,
        (
            "service-classes.yaml",
            "service-classes.yml",
            "serviceclass-data.json",
            "serviceclass-data.yaml",
        ),
        True,
    ),
    Section(
        "serverData",
        ServerData,
        ("servers.yaml", "servers.yml", "server-data.json", "server-data.yaml"),
        False,
    ),
    Section(
        "optimizerData",
        OptimizerData,
        ("optimizer.yaml", "optimizer.yml", "optimizer-data.json", "optimizer-data.yaml"),
        False,
    ),
)


@dataclass
class LoadedConfig:
    system: SystemSpec
    warnings: list[str] = field(default_factory=list)
    # section key -> file it came from (for messages and reload checks)
    sources: dict[str, Path] = field(default_factory=dict)


# --- reading files ---------------------------------------------------------------


def read_document(path: Path) -> Any:
    """Parse a JSON or YAML file; malformed input names line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text: {exc.reason}"]) from None
    if path.suffix.lower() == ".json":
        try:
            return jsonout.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                [f"{path}: line {exc.lineno}, column {exc.colno}: invalid JSON: {exc.msg}"]
            ) from None
    import yaml  # here: JSON-only runs (the reference files) skip its ~15 ms import

    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = exc.problem or exc.context or "syntax error"
        raise ConfigError([f"{path}: {where}invalid YAML: {problem}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: invalid YAML: {exc}"]) from None


# --- pydantic errors as one-liners ------------------------------------------------------

_TYPE_WORDS = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _describe_error(err: Mapping[str, Any]) -> str:
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    value = err.get("input")
    shown = json.dumps(value) if _jsonable(value) else repr(value)
    got = f", got {shown if len(shown) <= 80 else shown[:60] + f'… ({len(shown)} chars)'}"
    if kind == "missing":
        return "required field is missing"
    bounds = {"greater_than": (">", "gt"), "greater_than_equal": (">=", "ge")}
    bounds |= {"less_than": ("<", "lt"), "less_than_equal": ("<=", "le")}
    if kind in bounds:
        op, key = bounds[kind]
        return f"must be {op} {_number(ctx.get(key))}{got}"
    if kind == "string_too_short":
        return f"must not be empty{got}"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters{got}"
    if kind == "value_error":
        return f"{str(err.get('msg', 'invalid')).removeprefix('Value error, ')}{got}"
    if kind == "finite_number":
        return f"must be a finite number{got}"
    if kind in ("enum", "literal_error"):
        return f"must be one of {ctx.get('expected')}{got}"
    if kind in _TYPE_WORDS:
        return f"expected {_TYPE_WORDS[kind]}{got}"
    if kind == "extra_forbidden":
        return "unknown key"
    return f"{err.get('msg', 'invalid')}{got}"


# Problems that name a value beyond its physical bound (controlloop.bounds), as worded by
# _describe_error; the REST API answers them 422 (400 for every other problem).
_BOUND_WORDS = ("must be <", "must be a finite number", "characters, got", "or >= 1 token")


def is_bound_problem(line: str) -> bool:
    return any(word in line for word in _BOUND_WORDS)


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def validate_section(
    section: Section, raw: Any, *, where: str, prefix: tuple[str | int, ...] = ()
) -> tuple[BaseModel | None, list[str]]:
    """Normalise keys and validate one section; returns (spec, problems)."""
    problems: list[str] = []
    if raw is None and not section.required:
        raw = {}
    if not isinstance(raw, Mapping):
        expected = ", ".join(f"'{k}'" for k in _field_keys(section.model).values())
        problems.append(
            f"{where}: {_path_str(prefix)}: expected a mapping with {expected}, "
            f"got {type(raw).__name__}"
        )
        return None, problems
    normalized = normalize_keys(section.model, raw, path=prefix, problems=problems, where=where)
    try:
        spec = section.model.model_validate(normalized)
    except ValidationError as exc:
        for err in exc.errors():
            loc = (*prefix, *err["loc"])
            problems.append(f"{where}: {_path_str(loc)}: {_describe_error(err)}")
        return None, problems
    return (spec if not problems else None), problems


# --- assembling and cross-checking the system ----------------------------------------------


def _did_you_mean(name: str, candidates: Iterable[str]) -> str:
    options = sorted(set(candidates))
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    shown = ", ".join(options[:12]) + (", …" if len(options) > 12 else "")
    return f" (known: {shown})" if options else " (none defined)"


def _fix_priorities(raw_classes: Any, *, where: str, path: tuple[str | int, ...]) -> list[str]:
    """Priorities outside 1..100 are accepted with a warning and set to 100 (in place)."""
    warnings: list[str] = []
    if not isinstance(raw_classes, list):
        return warnings
    for i, cls in enumerate(raw_classes):
        if not isinstance(cls, dict):
            continue
        for key in list(cls):
            if _fold(str(key)) != "priority":
                continue
            value = cls[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue  # a type error, reported by validation
            if not 1 <= value <= LOWEST_PRIORITY or value != int(value):
                warnings.append(
                    f"{where}: {_path_str((*path, i, 'priority'))}: must be an integer in "
                    f"1..100, got {json.dumps(value)}; using {LOWEST_PRIORITY}"
                )
                cls[key] = LOWEST_PRIORITY
    return warnings


def _find_key(mapping: Mapping[str, Any], wanted: str) -> str | None:
    for key in mapping:
        if _fold(str(key)) == _fold(wanted):
            return str(key)
    return None


def cross_check(
    system: SystemSpec, where: Mapping[str, str], prefix: Mapping[str, tuple[str | int, ...]]
) -> tuple[list[str], list[str]]:
    """Reference and uniqueness checks across sections: (problems, warnings)."""
    problems: list[str] = []
    warnings: list[str] = []

    def at(section: str, *path: str | int) -> str:
        return f"{where[section]}: {_path_str((*prefix.get(section, ()), *path))}"

    def dupes(section: str, keys: list[Any], field_name: str, what: str) -> None:
        seen: dict[Any, int] = {}
        for i, key in enumerate(keys):
            if key in seen:
                shown = "/".join(key) if isinstance(key, tuple) else key
                problems.append(
                    f"{at(section, field_name, i)}: duplicate {what} '{shown}' "
                    f"(first at {field_name}[{seen[key]}])"
                )
            else:
                seen[key] = i

    accs = {a.name: a for a in system.accelerators}
    acc_types = {a.type for a in system.accelerators}
    dupes("acceleratorData", [a.name for a in system.accelerators], "accelerators", "accelerator")
    dupes("capacityData", [c.type for c in system.capacity.count], "count", "capacity type")
    for i, entry in enumerate(system.capacity.count):
        if entry.type not in acc_types:
            problems.append(
                f"{at('capacityData', 'count', i, 'type')}: unknown accelerator type "
                f"'{entry.type}'{_did_you_mean(entry.type, acc_types)}"
            )

    dupes("modelData", [(m.name, m.acc) for m in system.models], "models", "model/accelerator")
    models = {m.name for m in system.models}
    for i, perf in enumerate(system.models):
        if perf.acc not in accs:
            problems.append(
                f"{at('modelData', 'models', i, 'acc')}: unknown accelerator "
                f"'{perf.acc}'{_did_you_mean(perf.acc, accs)}"
            )
        has_chain = perf.decode_parms is not None and perf.prefill_parms is not None
        if not has_chain and perf.perf_parms is None:
            problems.append(
                f"{at('modelData', 'models', i)}: needs decodeParms and prefillParms "
                f"(or perfParms) for model '{perf.name}' on '{perf.acc}'"
            )

    dupes("serviceClassData", [c.name for c in system.service_classes], "serviceClasses", "class")
    classes = {c.name: c for c in system.service_classes}
    for i, cls in enumerate(system.service_classes):
        dupes(
            "serviceClassData",
            [t.model for t in cls.model_targets],
            f"serviceClasses[{i}].modelTargets",
            f"target in class '{cls.name}' for model",
        )
        for j, target in enumerate(cls.model_targets):
            if target.model not in models:
                warnings.append(
                    f"{at('serviceClassData', 'serviceClasses', i, 'modelTargets', j, 'model')}"
                    f": no perf data for model '{target.model}'"
                    f"{_did_you_mean(target.model, models)}; target ignored"
                )

    dupes("serverData", [s.name for s in system.servers], "servers", "server")
    for i, server in enumerate(system.servers):
        if server.model not in models:
            problems.append(
                f"{at('serverData', 'servers', i, 'model')}: unknown model "
                f"'{server.model}'{_did_you_mean(server.model, models)}"
            )
        cls_spec = classes.get(server.service_class)
        if cls_spec is None:
            problems.append(
                f"{at('serverData', 'servers', i, 'class')}: unknown service class "
                f"'{server.service_class}'{_did_you_mean(server.service_class, classes)}"
            )
        elif server.model in models and cls_spec.target(server.model) is None:
            warnings.append(
                f"{at('serverData', 'servers', i)}: class '{server.service_class}' has no "
                f"target for model '{server.model}'; server '{server.name}' cannot be sized"
            )
        current = server.current_alloc.accelerator
        if current and current not in accs:
            problems.append(
                f"{at('serverData', 'servers', i, 'currentAlloc', 'accelerator')}: unknown "
                f"accelerator '{current}'{_did_you_mean(current, accs)}"
            )
        if server.keep_accelerator and not current:
            warnings.append(
                f"{at('serverData', 'servers', i, 'keepAccelerator')}: set but the server has "
                "no current accelerator; ignored"
            )
    if not system.optimizer.unlimited and not system.capacity.count and system.servers:
        warnings.append(
            f"{where.get('capacityData', where['acceleratorData'])}: no capacity given and "
            "the optimizer is limited: nothing can be allocated"
        )
    return problems, warnings


def assemble(
    raw_sections: Mapping[str, Any],
    *,
    where: Mapping[str, str],
    prefix: Mapping[str, tuple[str | int, ...]] | None = None,
) -> tuple[SystemSpec, list[str]]:
    """Validate raw section documents and build the system; raises ConfigError."""
    prefix = prefix or {}
    problems: list[str] = []
    warnings: list[str] = []
    specs: dict[str, BaseModel] = {}
    for section in SECTIONS:
        raw = raw_sections.get(section.key)
        loc = where.get(section.key, "(input)")
        if raw is None and section.required:
            problems.append(f"{loc}: section '{section.key}' is missing")
            continue
        if section.key == "serviceClassData" and isinstance(raw, dict):
            key = _find_key(raw, "serviceClasses")
            if key is not None:
                warnings += _fix_priorities(
                    raw[key], where=loc, path=(*prefix.get(section.key, ()), "serviceClasses")
                )
        spec, section_problems = validate_section(
            section, raw, where=loc, prefix=prefix.get(section.key, ())
        )
        problems += section_problems
        if spec is not None:
            specs[section.key] = spec
    if problems:
        raise ConfigError(problems)
    system = SystemSpec(
        accelerators=typing.cast(AcceleratorData, specs["acceleratorData"]).accelerators,
        capacity=typing.cast(CapacitySpec, specs["capacityData"]),
        models=typing.cast(ModelData, specs["modelData"]).models,
        service_classes=typing.cast(ServiceClassData, specs["serviceClassData"]).service_classes,
        servers=typing.cast(ServerData, specs["serverData"]).servers,
        optimizer=typing.cast(OptimizerData, specs["optimizerData"]).optimizer,
    )
    full_where = {s.key: where.get(s.key, "(input)") for s in SECTIONS}
    cross_problems, cross_warnings = cross_check(system, full_where, prefix)
    if cross_problems:
        raise ConfigError(cross_problems)
    return system, warnings + cross_warnings


def parse_system_document(doc: Any, *, where: str) -> LoadedConfig:
    """The one-document form ``{"system": {section: …}}`` (the wrapper is optional)."""
    if not isinstance(doc, Mapping):
        raise ConfigError(
            [f"{where}: expected a mapping with key 'system', got {type(doc).__name__}"]
        )
    prefix: tuple[str | int, ...] = ()
    body: Any = doc
    system_key = _find_key(doc, "system")
    if system_key is not None:
        extra = [k for k in doc if k != system_key]
        if extra:
            raise ConfigError(
                [f"{where}: {_clip_key(str(extra[0]))}: unknown top-level key; expected 'system'"]
            )
        body = doc[system_key]
        prefix = (system_key,)
        if not isinstance(body, Mapping):
            raise ConfigError(
                [f"{where}: system: expected a mapping of sections, got {type(body).__name__}"]
            )
    keys = {_fold(s.key): s.key for s in SECTIONS}
    raw_sections: dict[str, Any] = {}
    problems: list[str] = []
    for raw_key, value in body.items():
        canonical = keys.get(_fold(str(raw_key)))
        if canonical is None:
            problems.append(
                f"{where}: {_path_str((*prefix, str(raw_key)))}: unknown section"
                f"{_did_you_mean(_clip_key(str(raw_key)), keys.values())}"
            )
            continue
        raw_sections[canonical] = value
    if problems:
        raise ConfigError(problems)
    section_prefix = {
        s.key: (*prefix, next((k for k in body if keys.get(_fold(str(k))) == s.key), s.key))
        for s in SECTIONS
    }
    system, warnings = assemble(
        raw_sections, where={s.key: where for s in SECTIONS}, prefix=section_prefix
    )
    return LoadedConfig(system=system, warnings=warnings)


def _section_file(directory: Path, section: Section) -> Path | None:
    found = [directory / name for name in section.files if (directory / name).is_file()]
    if len(found) > 1:
        raise ConfigError(
            [
                f"{directory}: both {found[0].name} and {found[1].name} define section "
                f"'{section.key}'; keep one"
            ]
        )
    return found[0] if found else None


def load_directory(directory: Path) -> LoadedConfig:
    raw_sections: dict[str, Any] = {}
    where: dict[str, str] = {}
    sources: dict[str, Path] = {}
    problems: list[str] = []
    for section in SECTIONS:
        path = _section_file(directory, section)
        where[section.key] = str(path or directory / section.files[0])
        if path is None:
            if section.required:
                names = " or ".join(section.files[:1] + section.files[2:3])
                problems.append(f"{directory}: missing {names} (section '{section.key}')")
            continue
        sources[section.key] = path
        try:
            raw_sections[section.key] = read_document(path)
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems)
    system, warnings = assemble(raw_sections, where=where)
    return LoadedConfig(system=system, warnings=warnings, sources=sources)


def load_config(path: str | Path) -> LoadedConfig:
    """Load any supported form; raises :class:`ConfigError` with one line per problem."""
    path = Path(path)
    with gc_paused():  # parsed documents and specs: many objects, no cycles
        if path.is_dir():
            return load_directory(path)
        if not path.exists():
            raise ConfigError([f"{path}: no such file or directory"])
        loaded = parse_system_document(read_document(path), where=str(path))
    loaded.sources = {s.key: path for s in SECTIONS}
    return loaded


def load_system(path: str | Path) -> SystemSpec:
    """Load and validate; warnings go to the log."""
    loaded = load_config(path)
    for warning in loaded.warnings:
        log.warning("%s", warning)
    return loaded.system
