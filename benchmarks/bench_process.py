"""Whole-process speed of ``controlloop optimize``: the CLI run as a subprocess, repeated.

Run: ``.venv/bin/python benchmarks/bench_process.py [--sizes 27 3000] [--repeat 7]
[--format json] [--solver greedy] [--path CONFIG ...]``

Size 27 is the large sample (``config/examples/large``); any other N is the synthetic fleet
of ``bench_optimize.py`` (written once as one JSON document ``{"system": ...}`` to a
temporary directory). Each case runs ``python -m controlloop optimize PATH --format FMT
--output FILE`` ``--repeat`` times after one warm-up run (page cache, ``.pyc``), and prints
the wall time (min / median / max), the CPU time (user + sys) and the peak RSS of the child,
like ``hyperfine``. The children write bytecode whatever ``PYTHONDONTWRITEBYTECODE`` says.
Peak RSS is the largest of all runs of the case (``ru_maxrss`` of
the children). Wall times are sensitive to other load on the machine; CPU time less so.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parents[1]
LARGE = ROOT / "config" / "examples" / "large"


def case_path(n: int, workdir: Path) -> Path:
    if n == 27:
        return LARGE
    from bench_optimize import fleet  # the same fleet as the in-process benchmark

    from controlloop.config import load_system

    path = workdir / f"fleet-{n}.json"
    if not path.exists():
        path.write_text(json.dumps(fleet(load_system(LARGE), n).to_reference_json()))
    return path


def run_once(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(wall s, cpu s, peak RSS MB) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr.decode()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, after.ru_maxrss // 1024  # max over children so far, in MB


def plan_summary(path: Path) -> str:
    """Solver, status and gap of the last run's JSON plan (whether a MILP proved its plan)."""
    plan = json.loads(path.read_text())
    gap = plan.get("gap")
    return (f"{plan.get('solver')} {plan.get('status')}"
            + ("" if gap is None else f" gap {gap:.2e}") + f" cost {plan.get('totalCost')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[27, 3000])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--format", default="json", choices=["json", "yaml", "table"])
    parser.add_argument("--solver", default=None, choices=["greedy", "milp"])
    parser.add_argument("--path", type=Path, nargs="*", default=[],
                        help="configs to run instead of --sizes")
    parser.add_argument("--workdir", type=Path, help="where fleet files go (default: a temp dir)")
    args = parser.parse_args()

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # as installed: the warm-up writes the .pyc (some shells set this, and each run then
    # compiled every controlloop module again, 20-25 ms)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        cases = [(p.stem, p) for p in args.path] if args.path else [
            (f"{'large' if n == 27 else 'fleet'} {n}", case_path(n, workdir)) for n in args.sizes
        ]
        print(f"python {sys.version.split()[0]}, format {args.format}, "
              f"solver {args.solver or 'from config'}, {args.repeat} runs after 1 warm-up")
        width = max([14] + [len(name) for name, _ in cases])
        print(f"{'case':<{width}} {'wall min':>9} {'median':>9} {'max':>9} {'cpu med':>9} "
              f"{'RSS MB':>7}  plan")
        for name, path in cases:
            out = Path(tmp) / "plan.out"
            cmd = [sys.executable, "-m", "controlloop", "optimize", str(path),
                   "--format", args.format, "--output", str(out)]
            if args.solver:
                cmd += ["--solver", args.solver]
            run_once(cmd, env)
            walls, cpus, rss = [], [], 0
            for _ in range(args.repeat):
                wall, cpu, rss = run_once(cmd, env)
                walls.append(wall)
                cpus.append(cpu)
            print(f"{name:<{width}} {min(walls):>8.3f}s {statistics.median(walls):>8.3f}s "
                  f"{max(walls):>8.3f}s {statistics.median(cpus):>8.3f}s {rss:>7}  "
                  f"{plan_summary(out) if args.format == 'json' else ''}")


if __name__ == "__main__":
    main()
