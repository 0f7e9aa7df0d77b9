"""The layering contract of docs/architecture.md, and what must not drift."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "controlloop"


def test_import_contracts_hold() -> None:
    """import-linter (contracts in pyproject.toml): layers, no cycles, kube only in cluster."""
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), str(ROOT / "pyproject.toml")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout, done.stdout


def test_no_module_is_over_650_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 650}
    assert not long, long


def test_packaged_samples_are_the_repository_config() -> None:
    """controlloop/data ships config/ (large sample) and config/examples/small unchanged."""
    for packaged, source in (
        (PACKAGE / "data" / "large", ROOT / "config"),
        (PACKAGE / "data" / "small", ROOT / "config" / "examples" / "small"),
    ):
        names = sorted(p.name for p in packaged.iterdir())
        assert names, packaged
        match, mismatch, errors = filecmp.cmpfiles(packaged, source, names, shallow=False)
        assert not mismatch and not errors, (packaged, mismatch, errors)


def test_no_test_module_imports_another() -> None:
    offenders = []
    for path in (ROOT / "tests").rglob("test_*.py"):
        if path.name == Path(__file__).name:
            continue
        for line in path.read_text().splitlines():
            text = line.strip()
            if text.startswith(("from tests.", "import tests.")) and ".test_" in text:
                offenders.append(f"{path.relative_to(ROOT)}: {text}")
            if text.startswith(("from benchmarks", "import benchmarks")) or (
                "spec_from_file_location(" in text and "bench" in text
            ):
                offenders.append(f"{path.relative_to(ROOT)}: {text}")
    assert not offenders, offenders


def test_no_import_cycles_between_modules() -> None:
    """No module reaches itself through imports, function-level imports included."""
    import grimp

    graph = grimp.build_graph("controlloop")
    modules = sorted(m for m in graph.modules if m != "controlloop")
    # a package's __init__ importing its own modules is not a cycle of the design
    edges = {m: {i for i in graph.find_modules_directly_imported_by(m)
                 if i.startswith("controlloop.") and not m.startswith(i + ".")}
             for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for m in modules:
        if m not in index:
            visit(m)
    assert not cycles, cycles
