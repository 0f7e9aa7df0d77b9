"""The demo report: PNG plots over time (matplotlib, Agg) and ``report.md``.

Every plot has labelled axes with units and a legend. Timeline plots show
simulated time in minutes; the classic-example ("assignment") scenarios add
the assignment table and bar charts of the final cycle.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from controlloop.demo.records import slo_met  # noqa: E402

if TYPE_CHECKING:
    from controlloop.demo.records import CycleRecord, DemoRun

DPI = 90
MAX_LINES = 12  # per-server lines beyond this go into a "top N" selection


def write_report(run: DemoRun, outdir: Path) -> list[Path]:
    """Write the plots and ``report.md`` into ``outdir``; return the plot files."""
    outdir.mkdir(parents=True, exist_ok=True)
    plots: list[tuple[str, Path]] = []
    recs = run.records
    servers = _servers(run)
    t = [r.t_s / 60.0 for r in recs]
    marks = _phase_marks(run)

    fig, ax = _fig()
    for name in servers:
        ax.plot(t, [_row(r, name).load.get("arrivalRate") or 0.0 for r in recs], label=name)
    _finish(ax, fig, "Observed load per server", "arrival rate (req/min)", marks)
    plots.append(("Load", _save(fig, outdir / "load.png")))

    fig, axes = plt.subplots(2, 1, figsize=(10, 7.5), sharex=True)
    for name in servers:
        axes[0].step(t, [r.cluster[name]["replicas"] for r in recs], where="post", label=name)
    axes[0].step(t, [sum(c["pending"] for c in r.cluster.values()) for r in recs], where="post",
                 color="black", linestyle=":", label="pending (all servers)")
    _finish(axes[0], None, "Replicas per server (Deployment spec)", "replicas", marks, xlabel=False)
    accs = sorted({r.cluster[n]["accelerator"] or "-" for r in recs for n in servers})
    idx = {a: i for i, a in enumerate(accs)}
    for k, name in enumerate(servers):
        jitter = (k - len(servers) / 2) * 0.02
        axes[1].step(t, [idx[r.cluster[name]["accelerator"] or "-"] + jitter for r in recs],
                     where="post", label=name)
    axes[1].set_yticks(range(len(accs)), accs)
    _finish(axes[1], fig, "Accelerator per server", "accelerator", marks)
    plots.append(("Replicas and accelerator", _save(fig, outdir / "replicas.png")))

    fig, ax = _fig()
    ax.plot(t, [r.report.total_cost for r in recs], label="total (controller's plan)", color="C0")
    ax.plot(t, [_running_cost(run, r) for r in recs], label="cards held (starting + serving)",
            color="C1", linestyle="--")
    _finish(ax, fig, "Cost", "cost (cents/hour)", marks)
    plots.append(("Cost", _save(fig, outdir / "cost.png")))

    fig, axes = plt.subplots(2, 1, figsize=(10, 7.5), sharex=True)
    for k, (key, slo, pred, title) in enumerate((
        ("itlMs", "slo_itl_ms", "predicted_itl_ms", "ITL"),
        ("ttftMs", "slo_ttft_ms", "predicted_ttft_ms", "TTFT"),
    )):
        ax = axes[k]
        for j, name in enumerate(servers):
            color = f"C{j % 10}"
            emu = [_ratio(_row(r, name).load.get(key), getattr(_row(r, name), slo)) for r in recs]
            prd = [_ratio(getattr(_row(r, name), pred), getattr(_row(r, name), slo)) for r in recs]
            ax.plot(t, emu, color=color, label=f"{name} emulated")
            ax.plot(t, prd, color=color, linestyle=":", alpha=0.7)
        ax.axhline(1.0, color="red", linewidth=1.5, label="SLO target")
        ax.plot([], [], color="grey", linestyle=":", label="predicted (dotted)")
        ax.set_yscale("log")
        _finish(ax, fig if k == 1 else None, f"{title}: emulated (solid) and predicted (dotted)",
                f"{title} / SLO target (ratio, log)", marks, xlabel=k == 1)
    plots.append(("Latency against the SLO", _save(fig, outdir / "latency.png")))

    fig, ax = _fig()
    types = sorted({typ for r in recs for typ in r.used_cards})
    for j, typ in enumerate(types):
        color = f"C{j % 10}"
        ax.step(t, [r.used_cards.get(typ, 0) for r in recs], where="post", color=color,
                label=f"{typ} used")
        if run.capacity is not None:
            ax.axhline(run.capacity.get(typ, 0), color=color, linestyle="--",
                       label=f"{typ} capacity")
    title = "GPU cards in use per type" + (" (capacity unlimited)" if run.capacity is None else "")
    _finish(ax, fig, title, "cards", marks)
    plots.append(("GPU usage", _save(fig, outdir / "gpus.png")))

    sections: list[str] = []
    # [tuning] model error (and what was learnt) over the run
    from controlloop.demo.fidelity_figures import model_error_plot, model_error_section

    sections.append(model_error_section(run))
    plots.append(("Model error", _save(model_error_plot(run), outdir / "model-error.png")))
    if run.scenario.report == "assignment":
        last = recs[-1]
        for title, fname, fn in (
            ("Replicas and batch size", "bars-replicas.png", _bars_replicas),
            ("ITL and waiting time", "bars-latency.png", _bars_latency),
        ):
            fig = fn(run, last)
            plots.append((title, _save(fig, outdir / fname)))
        sections.append(_assignment_md(run))
    (outdir / "report.md").write_text(_markdown(run, plots, sections), encoding="utf-8")
    return [p for _, p in plots]


# --- helpers -------------------------------------------------------------------------------------


def _servers(run: DemoRun) -> list[str]:
    names = [s.name for s in run.system.servers]
    if len(names) <= MAX_LINES:
        return names
    # Too many lines to read: plot the servers with the most load.
    peak = {n: max((_row(r, n).load.get("arrivalRate") or 0.0) for r in run.records) for n in names}
    return sorted(names, key=lambda n: -peak[n])[:MAX_LINES]


def _row(rec: CycleRecord, name: str) -> Any:
    for row in rec.report.servers:
        if row.server == name:
            return row
    raise KeyError(name)


def _ratio(value: float | None, slo: float | None) -> float:
    if value is None or not slo:
        return math.nan
    return value / slo


def _running_cost(run: DemoRun, rec: CycleRecord) -> float:
    total = 0.0
    for name, c in rec.cluster.items():
        acc = run.system.accelerator(c["accelerator"]) if c["accelerator"] else None
        server = next(s for s in run.system.servers if s.name == name)
        perf = run.system.perf(server.model, acc.name) if acc else None
        if acc is not None and perf is not None:
            total += acc.cost * perf.acc_count * (c["serving"] + c["starting"])
    return total


def _phase_marks(run: DemoRun) -> list[float]:
    times = {t for s in run.system.servers for t in run.scenario.profile(s.name).change_times()}
    end = run.records[-1].t_s if run.records else 0.0
    return sorted(t / 60.0 for t in times if 0 < t <= end)


def _fig() -> tuple[Figure, Axes]:
    fig, ax = plt.subplots(figsize=(10, 5))
    return fig, ax


def _finish(ax: Axes, fig: Figure | None, title: str, ylabel: str, marks: list[float],
            *, xlabel: bool = True) -> None:
    for i, m in enumerate(marks):
        ax.axvline(m, color="grey", linestyle="--", linewidth=0.8,
                   label="load phase change" if i == 0 else None)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    if xlabel:
        ax.set_xlabel("simulated time (minutes)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    if fig is not None:
        fig.tight_layout()


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _bars_replicas(run: DemoRun, rec: CycleRecord) -> Figure:
    names = [s.name for s in run.system.servers]
    fig, axes = plt.subplots(2, 1, figsize=(12, 7.5), sharex=True)
    x = range(len(names))
    axes[0].bar(x, [rec.cluster[n]["replicas"] for n in names], label="replicas", color="C0")
    axes[0].bar(x, [rec.cluster[n]["pending"] for n in names], label="of which pending",
                color="C3")
    axes[0].set_ylabel("replicas")
    axes[0].set_title(f"Replicas and batch size per server (cycle {len(run.records)})")
    axes[1].bar(x, [rec.cluster[n]["batch"] for n in names], label="max batch size", color="C2")
    axes[1].set_ylabel("batch size (requests)")
    axes[1].set_xticks(list(x), names, rotation=75, fontsize=7)
    axes[1].set_xlabel("server")
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def _bars_latency(run: DemoRun, rec: CycleRecord) -> Figure:
    names = [s.name for s in run.system.servers]
    rows = [_row(rec, n) for n in names]
    fig, axes = plt.subplots(2, 1, figsize=(12, 7.5), sharex=True)
    x = list(range(len(names)))
    w = 0.27
    axes[0].bar([i - w for i in x], [r.load.get("itlMs") or 0 for r in rows], w, label="emulated")
    axes[0].bar(x, [r.predicted_itl_ms or 0 for r in rows], w, label="predicted")
    axes[0].bar([i + w for i in x], [r.slo_itl_ms or 0 for r in rows], w, label="SLO target")
    axes[0].set_ylabel("ITL (ms)")
    axes[0].set_title("Inter-token latency per server")
    waits = [rec.cluster[n]["observed"].get("wait_ms") or 0 for n in names]
    axes[1].bar([i - w / 2 for i in x], waits, w, label="emulated queue wait")
    axes[1].bar([i + w / 2 for i in x], [r.load.get("ttftMs") or 0 for r in rows], w,
                label="emulated TTFT")
    axes[1].set_yscale("symlog", linthresh=10)
    axes[1].set_ylabel("time (ms, symlog)")
    axes[1].set_title("Waiting time and time to first token per server")
    axes[1].set_xticks(x, names, rotation=75, fontsize=7)
    axes[1].set_xlabel("server")
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def _assignment_md(run: DemoRun) -> str:
    """The classic tables: models x classes -> accelerator (``old → new`` on a change)."""
    recs = run.records
    last = recs[-1]
    marks = _phase_marks(run)
    before = None
    if marks:
        change = marks[0] * 60.0
        earlier = [r for r in recs if r.t_s <= change]
        before = earlier[-1] if earlier else None
    servers = run.system.servers
    models = sorted({s.model for s in servers})
    classes = [c.name for c in run.system.service_classes if any(s.service_class == c.name
                                                                  for s in servers)]
    cell: dict[tuple[str, str], str] = {}
    for s in servers:
        new = last.cluster[s.name]
        text = f"{new['accelerator'] or '—'} ×{new['replicas']}"
        if before is not None:
            old = before.cluster[s.name]
            if (old["accelerator"], old["replicas"]) != (new["accelerator"], new["replicas"]):
                text = f"{old['accelerator'] or '—'} ×{old['replicas']} → {text}"
        cell[(s.model, s.service_class)] = text
    lines = ["## Assignment", ""]
    when = f"at t={last.t_s / 60:.0f} min"
    if before is not None:
        when = f"before the load change (t={before.t_s / 60:.0f} min) → {when}"
    lines += [f"Accelerator × replicas per model and class, {when}.", ""]
    lines.append("| model | " + " | ".join(classes) + " |")
    lines.append("|---|" + "---|" * len(classes))
    for m in models:
        lines.append(f"| {m} | " + " | ".join(cell.get((m, c), "") for c in classes) + " |")
    lines += ["", "## Cards and cost per accelerator type", ""]
    lines.append("| type | cards | capacity | cost (¢/h) |")
    lines.append("|---|---:|---:|---:|")
    cost_by_type: dict[str, float] = {}
    for s in servers:
        c = last.cluster[s.name]
        acc = run.system.accelerator(c["accelerator"]) if c["accelerator"] else None
        perf = run.system.perf(s.model, acc.name) if acc else None
        if acc is not None and perf is not None:
            cost_by_type[acc.type] = cost_by_type.get(acc.type, 0.0) + (
                acc.cost * perf.acc_count * (c["serving"] - c["retiring"] + c["starting"])
            )
    for typ in sorted(set(last.used_cards) | set(cost_by_type)):
        cap = "∞" if run.capacity is None else str(run.capacity.get(typ, 0))
        lines.append(f"| {typ} | {last.used_cards.get(typ, 0)} | {cap} | "
                     f"{cost_by_type.get(typ, 0.0):.1f} |")
    lines.append(f"| **total** | {sum(last.used_cards.values())} | | "
                 f"**{sum(cost_by_type.values()):.1f}** |")
    lines += ["", f"Controller's planned total cost: {last.report.total_cost:.1f} ¢/h.", ""]
    return "\n".join(lines)


def summary_figures(run: DemoRun) -> dict[str, float]:
    """The run's headline figures: SLO attainment, mean cost, dropped and lost requests."""
    # SLO and cost per regular cycle (comparable across runs); requests over every window
    # (a surge cycle closes one too).
    recs = [r for r in run.records if not r.fast]
    met = [m for r in recs for m in (slo_met(row) for row in r.report.servers) if m is not None]
    every = run.records
    return {
        "serverCycles": float(len(met)),
        "sloMet": float(sum(met)),
        "sloMetPct": 100.0 * sum(met) / len(met) if met else math.nan,
        "meanCost": sum(r.report.total_cost for r in recs) / len(recs) if recs else math.nan,
        "dropped": float(sum(_dropped(r) for r in every)),
        "lost": float(sum(c["observed"].get("lost", 0) for r in every for c in r.cluster.values())),
        "offered": float(
            sum(c["observed"].get("offered", 0) for r in every for c in r.cluster.values())
        ),
        "surgeCycles": float(sum(1 for r in every if r.fast)),
    }


def _dropped(rec: CycleRecord) -> int:
    """Running requests killed with their pod in the window that ended at this cycle."""
    return sum(int(c["observed"].get("dropped", 0)) for c in rec.cluster.values())


def _markdown(run: DemoRun, plots: list[tuple[str, Path]], sections: list[str]) -> str:
    sc, every = run.scenario, run.records
    recs = [r for r in every if not r.fast]
    fig = summary_figures(run)
    term = sc.termination
    first, last = recs[0], recs[-1]
    lines = [
        f"# controlloop demo: {sc.name}", "",
        sc.description or "", "",
        f"- scenario: `{sc.source}`; system: `{sc.system}` "
        f"({len(run.system.servers)} servers, {len(run.system.accelerators)} accelerators)",
        f"- optimizer: {'unlimited' if run.system.optimizer.unlimited else 'limited'}, "
        f"{run.system.optimizer.solver}, saturation {run.system.optimizer.saturation_policy.value}",
        f"- {len(recs)} cycles every {sc.interval:g} s of simulated time; replica start-up "
        f"{sc.startup_seconds:g} s; wall time {run.wall_s:.1f} s",
        f"- pod termination: preStop {term['preStopSeconds']:g} s, vLLM drain "
        f"(--shutdown-timeout) {term['drainSeconds']:g} s, grace period "
        f"{term['gracePeriodSeconds']:g} s",
        "- cycle log: [cycles.jsonl](cycles.jsonl) (one CycleReport per line)", "",
        "## Figures", "",
        f"- SLO met in {fig['sloMet']:.0f} of {fig['serverCycles']:.0f} server-cycles "
        f"({fig['sloMetPct']:.1f} %)",
        f"- mean planned cost {fig['meanCost']:.1f} ¢/h (over the {len(recs)} regular cycles; "
        f"{fig['surgeCycles']:.0f} more run at once by the surge check)",
        f"- running requests dropped by pod removals: {fig['dropped']:.0f}; requests lost "
        f"(no replica or full queue): {fig['lost']:.0f} of {fig['offered']:.0f} offered",
        f"- pods removed while running requests: {run.removed_running}; longest time from "
        f"deletion to exit: {run.longest_drain_s:.0f} s", "",
    ]
    lines += sections
    lines += ["## Summary per cycle", "",
              "| cycle | t (min) | load (req/min) | replicas | pending | cost (¢/h) | SLO met "
              "| dropped | changes | surge cycles before |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    surges, before = 0, []
    for r in every:
        if r.fast:
            surges += 1
        else:
            before.append(surges)
            surges = 0
    for i, r in enumerate(recs, 1):
        met = [m for m in (slo_met(row) for row in r.report.servers) if m is not None]
        lines.append(
            f"| {i} | {r.t_s / 60:.0f} | "
            f"{sum(row.load.get('arrivalRate') or 0 for row in r.report.servers):.0f} | "
            f"{sum(c['replicas'] for c in r.cluster.values())} | "
            f"{sum(c['pending'] for c in r.cluster.values())} | {r.report.total_cost:.1f} | "
            f"{sum(met)}/{len(met)} | {_dropped(r)} | "
            f"{r.report.count('scaled') + r.report.count('moved')} | {before[i - 1]} |"
        )
    lines += ["", "## Per server (first → last cycle)", "",
              "| server | accelerator | replicas | batch | emulated ITL (ms) | SLO ITL | "
              "emulated TTFT (ms) | SLO TTFT | last decision and why |",
              "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for s in run.system.servers:
        a, b = first.cluster[s.name], last.cluster[s.name]
        row = _row(last, s.name)
        lines.append(
            f"| {s.name} | {_arrow(a['accelerator'], b['accelerator'])} | "
            f"{_arrow(a['replicas'], b['replicas'])} | {b['batch']} | "
            f"{_num(row.load.get('itlMs'))} | {_num(row.slo_itl_ms)} | "
            f"{_num(row.load.get('ttftMs'))} | {_num(row.slo_ttft_ms)} | "
            f"{_decision(row)} |"
        )
    lines += ["", "## Plots", ""]
    for title, path in plots:
        lines += [f"### {title}", "", f"![{title}]({path.name})", ""]
    return "\n".join(lines)


def _decision(row: Any) -> str:
    """Verdict, the replicas it asked for, and the whole reason (the table cell wraps)."""
    asked = f" → {row.desired_replicas}" if row.desired_replicas is not None else ""
    why = (row.reason or "").replace("|", "/")
    return f"**{row.verdict}**{asked}: {why}" if why else f"**{row.verdict}**{asked}"


def _arrow(a: object, b: object) -> str:
    return f"{a or '—'}" if a == b else f"{a or '—'} → {b or '—'}"


def _num(v: float | None) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"
