"""Our own /metrics (prometheus-client, a private registry). See docs/metrics.md."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from controlloop.loop.cycle import CycleReport

SERVER_LABELS = ("server", "namespace", "deployment")


class ControllerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.cycle_duration = Histogram(
            "controlloop_cycle_duration_seconds", "Duration of a control cycle",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120), registry=r,
        )
        self.cycles = Counter(
            "controlloop_cycles_total", "Control cycles by outcome (ok, partial, failed)",
            ["outcome"], registry=r,
        )
        self.last_cycle = Gauge(
            "controlloop_last_cycle_timestamp_seconds", "Start time of the last cycle", registry=r
        )
        self.errors = Counter(
            "controlloop_errors_total",
            "Errors by kind (collect, specs, not-found, conflict, server-error, timeout, …)",
            ["kind"], registry=r,
        )
        self.decisions = Counter(
            "controlloop_decisions_total",
            "Per-server decisions by verdict (scaled, moved, unchanged, held, error) and reason",
            ["server", "verdict", "reason"], registry=r,
        )
        self.target = Gauge(
            "controlloop_target_replicas",
            "actuation.mode metrics: replicas an HPA/ScaledObject should set on the Deployment "
            "(held servers: their current replicas, so the autoscaler holds too)",
            ["namespace", "deployment", "server", "accelerator"], registry=r,
        )
        self.desired = Gauge(
            "controlloop_server_desired_replicas", "Replicas the controller wants", SERVER_LABELS,
            registry=r,
        )
        self.current = Gauge(
            "controlloop_server_current_replicas", "Replicas observed (spec.replicas)",
            SERVER_LABELS, registry=r,
        )
        self.accelerator = Gauge(
            "controlloop_server_accelerator_info", "1 for the accelerator a server is on",
            (*SERVER_LABELS, "accelerator"), registry=r,
        )
        self.predicted_itl = Gauge(
            "controlloop_server_predicted_itl_ms", "Predicted average ITL, ms", SERVER_LABELS,
            registry=r,
        )
        self.predicted_ttft = Gauge(
            "controlloop_server_predicted_ttft_ms", "Predicted average TTFT, ms", SERVER_LABELS,
            registry=r,
        )
        self.observed_itl = Gauge(
            "controlloop_server_observed_itl_ms", "Observed average ITL, ms", SERVER_LABELS,
            registry=r,
        )
        self.observed_ttft = Gauge(
            "controlloop_server_observed_ttft_ms", "Observed average TTFT, ms", SERVER_LABELS,
            registry=r,
        )
        self.slo_itl = Gauge(
            "controlloop_server_slo_itl_ms", "ITL target of the server's service class, ms",
            SERVER_LABELS, registry=r,
        )
        self.slo_ttft = Gauge(
            "controlloop_server_slo_ttft_ms", "TTFT target of the server's service class, ms",
            SERVER_LABELS, registry=r,
        )
        self.arrival_rate = Gauge(
            "controlloop_server_arrival_rate_rpm", "Observed request rate, requests/minute",
            SERVER_LABELS, registry=r,
        )
        self.load_known = Gauge(
            "controlloop_server_load_known", "1 when the server's load was read this cycle",
            SERVER_LABELS, registry=r,
        )
        self.cost = Gauge(
            "controlloop_server_cost_cents_per_hour", "Cost of the desired allocation",
            SERVER_LABELS, registry=r,
        )
        self.total_cost = Gauge(
            "controlloop_total_cost_cents_per_hour", "Total cost of the desired allocations",
            registry=r,
        )
        self.specs_valid = Gauge(
            "controlloop_specs_valid", "1 when the last (re)load of the specs succeeded", registry=r
        )
        self.spec_reload_errors = Counter(
            "controlloop_spec_reload_errors_total",
            "Invalid spec edits (last good kept)",
            registry=r,
        )
        self.is_leader = Gauge(
            "controlloop_is_leader", "1 when this replica holds the leader lease", registry=r
        )
        self.surge_cycles = Counter(
            "controlloop_surge_cycles_total",
            "Cycles run at once by the surge check (behavior.panic)", registry=r,
        )
        self.panic = Gauge(
            "controlloop_server_panic",
            "1 while a server panics (may scale up, never down)", SERVER_LABELS, registry=r,
        )
        self.panic_conditions = Counter(
            "controlloop_panic_conditions_total",
            "Panic conditions seen in cycles, by kind (capacity, waiting, kv-cache)",
            ["server", "kind"], registry=r,
        )
        self.forecast_error = Gauge(
            "controlloop_server_forecast_error_ratio",
            "Mean absolute error of the load forecast, relative to the load (EWMA)",
            (*SERVER_LABELS, "forecaster"), registry=r,
        )
        self.startup_seconds = Gauge(
            "controlloop_server_startup_seconds",
            "Replica start-up time learned from observed pod readiness", SERVER_LABELS,
            registry=r,
        )
        # [tuning] model error per server and the learnt parameters per pair.
        self.model_error = Gauge(
            "controlloop_server_model_error_ratio",
            "Relative error of predicted (values sizing used, at the observed operating point) "
            "vs observed latency: (predicted - observed) / observed", (*SERVER_LABELS, "metric"),
            registry=r,
        )
        pair = ("model", "accelerator")
        self.tuning_param = Gauge(
            "controlloop_tuning_parameter", "Perf parameter sizing uses (tuned or profile)",
            (*pair, "parameter"), registry=r,
        )
        self.tuning_multiplier = Gauge(
            "controlloop_tuning_multiplier", "Applied multiplier of the profile's parameter",
            (*pair, "parameter"), registry=r,
        )
        self.tuning_sigma = Gauge(
            "controlloop_tuning_uncertainty_ratio",
            "Posterior 1-sigma of the parameter, relative (log-multiplier std-dev)",
            (*pair, "parameter"), registry=r,
        )
        self.tuning_warm = Gauge(
            "controlloop_tuning_warmed_up", "1 once the pair's fit is used for sizing", pair,
            registry=r,
        )
        self.tuning_nis = Gauge(
            "controlloop_tuning_nis", "Mean NIS of the pair's last update (chi-square, ~dof)",
            pair, registry=r,
        )
        self.tuning_obs = Gauge(
            "controlloop_tuning_observations", "Observations accepted / rejected by the NIS gate",
            (*pair, "outcome"), registry=r,
        )
        self.specs_valid.set(1)
        self.is_leader.set(1)
        for outcome in ("ok", "partial", "failed"):  # rate() and alerts see 0, not no series
            self.cycles.labels(outcome)

    def observe(self, report: CycleReport) -> None:
        self.cycle_duration.observe(report.duration_s)
        self.cycles.labels(report.outcome).inc()
        self.last_cycle.set(report.started_at)
        if report.trigger == "surge":
            self.surge_cycles.inc()
        for kind, n in report.error_kinds.items():
            self.errors.labels(kind).inc(n)
        # Per-server series are replaced each cycle so servers that went away disappear,
        # and a standby or a cycle that could not collect exports none (not stale ones).
        for gauge in (
            self.desired, self.current, self.accelerator, self.predicted_itl,
            self.predicted_ttft, self.observed_itl, self.observed_ttft, self.load_known, self.cost,
            self.panic, self.forecast_error, self.startup_seconds,
            self.slo_itl, self.slo_ttft, self.arrival_rate, self.target, self.model_error,
        ):
            gauge.clear()
        self._observe_tuning(report)
        self.total_cost.set(report.total_cost)
        for s in report.servers:
            labels = (s.server, s.namespace, s.deployment)
            reason = s.held_reason or s.error_kind or s.verdict
            self.decisions.labels(s.server, s.verdict, reason).inc()
            self.current.labels(*labels).set(s.current_replicas)
            if s.desired_replicas is not None:
                self.desired.labels(*labels).set(s.desired_replicas)
            acc = s.desired_accelerator or s.current_accelerator
            if acc:
                self.accelerator.labels(*labels, acc).set(1)
            for gauge, value in (
                (self.predicted_itl, s.predicted_itl_ms),
                (self.predicted_ttft, s.predicted_ttft_ms),
                (self.observed_itl, s.load.get("itlMs")),
                (self.observed_ttft, s.load.get("ttftMs")),
                (self.cost, s.cost),
                (self.slo_itl, s.slo_itl_ms),
                (self.slo_ttft, s.slo_ttft_ms),
                (self.arrival_rate, s.load.get("arrivalRate")),
            ):
                if value is not None:
                    gauge.labels(*labels).set(value)
            self.load_known.labels(*labels).set(0 if s.load.get("status") == "unknown" else 1)
            self.panic.labels(*labels).set(1 if s.panic else 0)
            if s.panic_kind:
                self.panic_conditions.labels(s.server, s.panic_kind).inc()
            if s.forecast_error is not None:
                self.forecast_error.labels(*labels, s.forecaster).set(s.forecast_error)
            if s.startup_seconds is not None:
                self.startup_seconds.labels(*labels).set(s.startup_seconds)
            err = s.model_error or {}
            for metric in ("itl", "ttft"):
                value = err.get(f"{metric}Error")
                if value is not None:
                    self.model_error.labels(*labels, metric).set(value)

            # Publishing is actuating in metrics mode: never in dry-run.
            if getattr(report, "actuation_mode", "patch") == "metrics" and not report.dry_run:
                decided = s.verdict in ("scaled", "moved", "unchanged")
                target = s.desired_replicas if decided else None
                self.target.labels(s.namespace, s.deployment, s.server, acc or "").set(
                    s.current_replicas if target is None else target)

    def _observe_tuning(self, report: CycleReport) -> None:
        pairs = (report.tuning or {}).get("pairs")
        if pairs is None:  # a cycle that did not get to tuning keeps the last values
            return
        for gauge in (self.tuning_param, self.tuning_multiplier, self.tuning_sigma,
                      self.tuning_warm, self.tuning_nis, self.tuning_obs):
            gauge.clear()
        for p in pairs:
            model, _, acc = p["pair"].partition("/")
            for name, value in p["params"].items():
                self.tuning_param.labels(model, acc, name).set(value)
                self.tuning_multiplier.labels(model, acc, name).set(p["applied"][name])
                self.tuning_sigma.labels(model, acc, name).set(p["sigma"][name])
            self.tuning_warm.labels(model, acc).set(1 if p["warmedUp"] else 0)
            if p["nis"] is not None and p["nis"] == p["nis"]:
                self.tuning_nis.labels(model, acc).set(p["nis"])
            self.tuning_obs.labels(model, acc, "accepted").set(p["observations"])
            self.tuning_obs.labels(model, acc, "rejected").set(p["rejected"])

    def track_watches(self, cache: Any) -> None:
        """Export a WatchCache's counts (controller.watch), read at each scrape."""
        self.registry.register(_WatchCollector(cache))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _WatchCollector:
    """controller.watch at scrape time: how the copies were served and kept."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache

    def describe(self) -> list[Any]:
        return []  # collected only at scrape time (no names claimed at registration)

    def collect(self) -> Iterator[Any]:
        stats = self.cache.stats
        reads = CounterMetricFamily(
            "controlloop_watch_reads", "Cycle reads of Deployments and pods by how they were "
            "answered: copy (a live watch's copy) or listed (no live copy: the cycle listed)",
            labels=["answer"])
        reads.add_metric(["copy"], stats.served)
        reads.add_metric(["listed"], stats.missed)
        yield reads
        for name, value, text in (
            ("lists", stats.lists, "Lists made by the watches (first, 410, after errors, resync)"),
            ("requests", stats.watches, "Watch requests opened"),
            ("events", stats.events, "Watch events applied to the copies"),
            ("failures", stats.failures, "Watches that failed (the copy is not used until "
             "listed again)"),
        ):
            yield CounterMetricFamily(f"controlloop_watch_{name}", text, value=value)
        yield GaugeMetricFamily("controlloop_watch_copies_live",
                                "Copies whose watch is live", value=self.cache.live_copies())
