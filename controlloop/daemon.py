"""``controlloop run``: wiring of specs, cluster edges, controller, HTTP and scheduler.

The scheduler holds no logic: APScheduler calls ``Controller.run_cycle`` every
interval, never two at once (max_instances=1), a late cycle coalesced; SIGTERM
and SIGINT let the running cycle finish, then exit 0.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from controlloop.cluster.httpauth import EndpointPolicy
from controlloop.cluster.kube_errors import KubeConfigError, KubeError
from controlloop.config import ConfigError, StartupError, load_config
from controlloop.config import _describe_error as describe_error
from controlloop.loop.controller import Controller, CycleReport, SpecSource
from controlloop.loop.settings import ControllerSettings, controller_file, load_controller_settings
from controlloop.malloc import limit_arenas, release_free_memory
from controlloop.metrics import ControllerMetrics
from controlloop.specs import SystemSpec
from controlloop.ui import ReportStore, UiApp
from controlloop.ui.app import send as send_ui
from controlloop.ui.store import publisher

log = logging.getLogger("controlloop.daemon")


class FileSpecSource(SpecSource):
    """Specs from a config directory, re-read when a file changes.

    An invalid edit keeps the last good specs and logs the error with its
    location; ``valid`` and ``last_error`` tell /readyz and /metrics.
    """

    def __init__(
        self,
        path: Path,
        *,
        overrides: dict[str, Any] | None = None,
        metrics: ControllerMetrics | None = None,
    ) -> None:
        self.path = path
        self.overrides = overrides or {}
        self.metrics = metrics
        self._stamp: tuple[tuple[str, float, int], ...] = ()
        self._good: tuple[SystemSpec, ControllerSettings] | None = None
        self.last_error = ""
        self._load(initial=True)

    def _files(self) -> list[Path]:
        if self.path.is_dir():
            return sorted(p for p in self.path.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
        return [self.path]

    def _signature(self) -> tuple[tuple[str, float, int], ...]:
        sig = []
        for p in self._files():
            try:
                st = p.stat()
            except OSError:
                continue
            sig.append((str(p), st.st_mtime, st.st_size))
        return tuple(sig)

    def _load(self, *, initial: bool = False) -> None:
        stamp = self._signature()
        try:
            system = load_config(self.path).system
            settings = load_controller_settings(self.path)
            settings = apply_overrides(settings, self.overrides)
        except ConfigError as exc:
            self._stamp = stamp
            self.last_error = "; ".join(exc.problems)
            if initial:
                raise
            log.error("invalid spec edit, keeping the last good specs: %s", self.last_error)
            if self.metrics:
                self.metrics.spec_reload_errors.inc()
                self.metrics.specs_valid.set(0)
            return
        self._stamp = stamp
        self._good = (system, settings)
        self.last_error = ""
        if self.metrics:
            self.metrics.specs_valid.set(1)
        if not initial:
            log.info("specs reloaded from %s", self.path)

    def current(self) -> tuple[SystemSpec, ControllerSettings]:
        if self._signature() != self._stamp:
            self._load()
        assert self._good is not None
        return self._good


# Where each override comes from, for error messages.
OVERRIDE_SOURCES = {
    "namespaces": "--namespace (env CONTROLLOOP_NAMESPACE)",
    "intervalSeconds": "--interval (env CONTROLLOOP_INTERVAL)",
    "prometheus": "--prometheus-url (env CONTROLLOOP_PROMETHEUS_URL)",
    "leaderElection": "--leader-elect (env CONTROLLOOP_LEADER_ELECT)",
}


def apply_overrides(settings: ControllerSettings, overrides: dict[str, Any]) -> ControllerSettings:
    """``settings`` with the command-line overrides, validated like controller.yaml.

    A bad value raises :class:`ConfigError` naming the flag and its variable.
    """
    update: dict[str, Any] = {}
    if overrides.get("namespaces"):
        update["namespaces"] = list(overrides["namespaces"])
    if overrides.get("interval") is not None:
        update["intervalSeconds"] = overrides["interval"]
    if overrides.get("prometheus_url"):
        update["prometheus"] = {
            **settings.prometheus.model_dump(by_alias=True), "url": overrides["prometheus_url"]
        }
    if overrides.get("leader_elect"):
        update["leaderElection"] = {
            **settings.leader_election.model_dump(by_alias=True), "enabled": True
        }
    if not update:
        return settings
    try:
        return ControllerSettings.model_validate({**settings.model_dump(by_alias=True), **update})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = [str(part) for part in err["loc"]]
            source = OVERRIDE_SOURCES.get(loc[0], ".".join(loc)) if loc else "override"
            problems.append(f"{source}: {describe_error(err)}")
        raise ConfigError(problems) from None


class CycleLog:
    """Appends one JSON line per cycle."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def __call__(self, report: CycleReport) -> None:
        line = json.dumps(report.to_json(), default=str, sort_keys=True)
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")


# --- HTTP: /healthz /readyz /metrics POST /invoke ------------------------------------------------


@dataclass
class HttpState:
    controller: Controller
    metrics: ControllerMetrics
    specs: Any = None  # a SpecSource with ``_good`` (files or custom resources)
    policy: EndpointPolicy | None = None  # None: everything open (tests, loopback)
    ui: UiApp | None = None  # the web dashboard at /ui (controlloop.ui), read-only


def ui_allowed(handler: Any, state: HttpState) -> bool:
    """/ui reads what /metrics shows: it is behind the same check (``--metrics-auth``).
    Answers and returns False on refusal."""
    if state.policy is None or not state.policy.metrics_protected:
        return True
    return not handler._refused("/ui", "get")


def make_http_server(host: str, port: int, state: HttpState) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args: Any) -> None:  # quiet access log
            log.debug("http: " + fmt, *args)

        def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _refused(self, path: str, verb: str) -> bool:
            """Answers and returns True when the policy refuses this call."""
            policy = state.policy
            if policy is None:
                return False
            decision = policy.authorizer.check(self.headers.get("Authorization", ""), path, verb)
            if decision.allowed:
                return False
            log.warning("http: refused %s %s from %s (%d): %s", verb.upper(), path,
                        decision.user or self.client_address[0], decision.code, decision.reason)
            body = json.dumps({"error": decision.reason}).encode()
            self.send_response(decision.code)
            if decision.code == 401:
                self.send_header("WWW-Authenticate", 'Bearer realm="controlloop"')
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return True

        def do_GET(self) -> None:  # noqa: N802 - http.server API
            if self.path == "/healthz":
                self._send(200, b"ok\n")
            elif self.path == "/readyz":
                ok = state.specs is None or state.specs._good is not None
                self._send(200 if ok else 503, b"ready\n" if ok else b"specs not loaded\n")
            elif self.path == "/metrics":
                from prometheus_client import CONTENT_TYPE_LATEST

                if state.policy and state.policy.metrics_protected and self._refused(
                        "/metrics", "get"):
                    return
                self._send(200, state.metrics.exposition(), CONTENT_TYPE_LATEST)
            elif state.ui is not None and state.ui.owns(self.path):
                if ui_allowed(self, state):
                    encoding = self.headers.get("Accept-Encoding", "")
                    send_ui(self, state.ui.handle(self.path, accept_encoding=encoding))
            else:
                self._send(404, b"not found\n")

        def _mutating(self) -> None:
            self._send(405, b"method not allowed\n")

        do_PUT = do_DELETE = do_PATCH = _mutating  # noqa: N815

        def do_POST(self) -> None:  # noqa: N802
            if self.path != "/invoke":
                self._send(404, b"not found\n")
                return
            policy = state.policy
            if policy is not None and not policy.invoke_enabled:
                self._send(403, b'{"error": "POST /invoke is disabled (--invoke off)"}',
                           "application/json")
                return
            if self._refused("/invoke", "post"):
                return
            wait = policy.invoke_limiter.acquire() if policy and policy.invoke_limiter else 0.0
            if wait > 0:
                self.send_response(429)
                self.send_header("Retry-After", str(max(1, round(wait))))
                body = b'{"error": "too many /invoke calls"}'
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            report = state.controller.run_cycle()
            body = json.dumps(
                {"cycle": report.cycle_id, "outcome": report.outcome, "summary": report.summary()}
            ).encode()
            self._send(200 if report.outcome != "failed" else 500, body, "application/json")

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def parse_listen(value: str | None, *, in_cluster: bool) -> tuple[str, int] | None:
    if value is None:
        value = "0.0.0.0:8080" if in_cluster else "127.0.0.1:8080"
    if value.lower() in ("off", "none", ""):
        return None
    host, _, port = value.rpartition(":")
    if not port.isdigit():
        raise ConfigError([f"--listen: expected HOST:PORT, got {value!r}"])
    return host or "0.0.0.0", int(port)


def check_kubeconfig(flag_value: str | None) -> None:
    """The kubeconfig ``run`` will read must exist: the library's own message for a
    missing file ("Invalid kube-config file. No configuration found.") hides the cause."""
    if flag_value:
        paths, source = [flag_value], "from --kubeconfig or CONTROLLOOP_KUBECONFIG"
    elif os.environ.get("KUBECONFIG"):
        paths, source = os.environ["KUBECONFIG"].split(os.pathsep), "from $KUBECONFIG"
    else:
        paths, source = [os.path.expanduser("~/.kube/config")], "the default"
    paths = [p for p in paths if p]
    if paths and not any(os.path.isfile(p) for p in paths):
        if len(paths) > 1:
            problem = f"none of the kubeconfig files {', '.join(paths)} ({source}) exists"
        elif os.path.exists(paths[0]):
            problem = f"kubeconfig {paths[0]} ({source}) is not a file"
        else:
            problem = f"kubeconfig {paths[0]} ({source}) does not exist"
        raise ConfigError([
            f"kubernetes: {problem}; give an existing file with --kubeconfig, "
            "or use --in-cluster when running in a pod"
        ])


# --- the command ----------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from controlloop.cluster.actuator import DryRunActuator, KubeActuator, note_held
    from controlloop.cluster.collector import KubeCollector
    from controlloop.cluster.kube import KubeClient

    limit_arenas()  # before any thread starts
    metrics = ControllerMetrics()
    overrides = {
        "namespaces": args.namespace,
        "interval": args.interval,
        "prometheus_url": args.prometheus_url,
        "leader_elect": args.leader_elect,
    }
    from_crs = getattr(args, "specs", "files") == "crd"
    specs: Any
    if not from_crs:
        if not Path(args.config).exists():
            raise ConfigError([f"{args.config}: no such config directory (--config)"])
        specs = FileSpecSource(Path(args.config), overrides=overrides, metrics=metrics)
    if not args.in_cluster:
        check_kubeconfig(args.kubeconfig)
    try:
        kube = (
            KubeClient.in_cluster()
            if args.in_cluster
            else KubeClient.from_kubeconfig(args.kubeconfig, args.context)
        )
    except KubeConfigError as exc:  # the kubeconfig / in-cluster config given is unusable
        raise ConfigError([f"kubernetes: {exc}"]) from None
    except KubeError as exc:
        raise StartupError(f"kubernetes: {exc}") from None
    if from_crs:
        specs = crd_spec_source(args, kube, overrides, metrics)
    system, settings = specs.current()
    try:
        prom_settings = prometheus_settings(settings.prometheus)
    except (ValueError, TypeError) as exc:
        where = controller_file(Path(args.config)) or args.config
        raise ConfigError([f"{where}: controller.{exc}"]) from None
    load_source = ReloadingLoadSource(lambda: specs.current()[1].prometheus, prom_settings)
    collector = KubeCollector(kube, load_source, lambda: specs.current()[1])  # reloaded
    actuator: Any = (
        DryRunActuator(
            lambda ns, name: kube.cached_deployment(ns, name) or kube.get_deployment(ns, name),
            settings.actuation)
        if args.dry_run
        else KubeActuator(kube, settings.actuation)
    )
    from controlloop.cluster.tuning_store import ConfigMapStore
    from controlloop.tuning import Tuner

    # [tuning] learnt perf survives restarts and leader changes in a ConfigMap next to the
    # lease; a dry run reads it but never writes.
    tuning_store = ConfigMapStore(kube, settings.leader_election.namespace,
                                  read_only=args.dry_run)
    controller = Controller(specs=specs, collector=collector, actuator=actuator,
                            dry_run=args.dry_run, tuner=Tuner(store=tuning_store))
    if settings.actuation.emit_events and not args.dry_run:
        controller.on_held = partial(note_held, kube)
    controller.on_report.append(metrics.observe)
    ui = daemon_ui(controller, specs, dry_run=args.dry_run)
    if args.cycle_log:
        try:
            controller.on_report.append(CycleLog(Path(args.cycle_log)))
        except OSError as exc:
            raise ConfigError([
                f"--cycle-log {args.cycle_log}: cannot create its directory: {exc.strerror or exc}"
            ]) from None
    log.info(
        "controlloop starting: config=%s mode=%s cluster=%s namespaces=%s interval=%.0fs %s "
        "solver=%s capacity=%s",
        args.config,
        "dry-run" if args.dry_run else "actuating",
        "in-cluster"
        if args.in_cluster
        else (args.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"),
        ",".join(settings.namespaces) or "all",
        settings.interval_seconds,
        prom_settings.describe(),
        system.optimizer.solver,
        settings.capacity.source,
    )
    if from_crs:
        # Only the leader's solution goes on the Optimizer (a standby's cycles are empty).
        controller.on_report.append(
            lambda report: specs.write_status(report) if controller.is_leader() else None)
    if args.once:
        report = controller.run_cycle()
        return 0 if report.outcome != "failed" else 1
    if settings.watch.enabled:  # one cycle has nothing to keep between cycles
        from controlloop.cluster.watchcache import WatchCache

        kube.watches = WatchCache(timeout_s=settings.watch.timeout_seconds,
                                  resync_s=settings.watch.resync_seconds)
        metrics.track_watches(kube.watches)
        log.info("Deployments and pods kept by watches (timeout %.0fs, resync %.0fs)",
                 settings.watch.timeout_seconds, settings.watch.resync_seconds)

    listen = parse_listen(args.listen, in_cluster=args.in_cluster)
    http = None
    if listen:
        policy = endpoint_policy(args, kube)
        try:
            http = make_http_server(listen[0], listen[1],
                                    HttpState(controller, metrics, specs, ui=ui, policy=policy))
        except OSError as exc:
            raise StartupError(
                f"--listen {listen[0]}:{listen[1]}: cannot listen: {exc.strerror or exc}"
            ) from None
        threading.Thread(target=http.serve_forever, name="http", daemon=True).start()
        log.info("serving /healthz /readyz /metrics /ui POST /invoke on %s:%d (%s)", *listen,
                 policy.describe())
    elector = None
    if settings.leader_election.enabled:
        from controlloop.cluster.leader import LeaderElector

        elector = LeaderElector(kube, settings.leader_election, on_change=metrics.is_leader.set)
        controller.is_leader = elector.is_leader
        elector.start()
    # Reloaded actuation settings apply from the next cycle.
    controller.on_report.append(
        lambda _report: setattr(actuator, "config", specs.current()[1].actuation)
    )
    def watch_specs(scheduler: Any) -> None:
        # A debounced change to the resources runs a cycle now (the same job, so never two
        # at once); the periodic schedule goes on from there.
        import datetime

        specs.on_change = lambda: scheduler.modify_job("cycle",
                                                       next_run_time=datetime.datetime.now())
        specs.start()

    try:
        run_scheduler(controller, settings.interval_seconds,
                      lambda: specs.current()[1].interval_seconds,
                      on_start=watch_specs if from_crs else None)
    finally:
        if from_crs:
            specs.stop()
        if elector is not None:
            elector.stop()
        if http is not None:
            http.shutdown()
        if kube.watches is not None:
            kube.watches.close()
    return 0


def daemon_ui(controller: Controller, specs: SpecSource, *, dry_run: bool) -> UiApp:
    """The dashboard over the daemon's last cycles (a bounded history, in memory)."""
    store = ReportStore(title="controlloop (dry-run)" if dry_run else "controlloop")
    controller.on_report.append(publisher(store, lambda: specs.current()[0]))
    return UiApp(store)
SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def crd_spec_source(args: argparse.Namespace, kube: Any, overrides: dict[str, Any],
                    metrics: ControllerMetrics) -> Any:
    """``--specs crd``: the custom resources of --crd-namespace (default: the pod's own
    namespace in-cluster, else controlloop-system); loop settings from the Optimizer's
    spec.controller, else --config's controller.yaml, else the defaults."""
    from controlloop.cluster.crdspecs import CrdSpecSource

    namespace = getattr(args, "crd_namespace", None)
    if not namespace and args.in_cluster and SA_NAMESPACE.is_file():
        namespace = SA_NAMESPACE.read_text(encoding="utf-8").strip()
    namespace = namespace or "controlloop-system"
    config = Path(args.config)
    base = (load_controller_settings(config)
            if config.is_dir() and controller_file(config) is not None else None)
    emit = not args.dry_run
    try:
        source = CrdSpecSource(
            kube.api_client, namespace, optimizer_name=getattr(args, "optimizer", "default"),
            base_settings=base, overrides=lambda s: apply_overrides(s, overrides),
            metrics=metrics, debounce_s=float(getattr(args, "debounce", 2.0)),
            events=kube if emit else None)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - the API server unreachable: one line, exit 1
        raise StartupError(f"kubernetes: cannot read the {namespace} spec resources: "
                           f"{type(exc).__name__}: {exc}") from None
    log.info("specs from %s custom resources in namespace %s (Optimizer/%s)", "controlloop.io",
             namespace, source.optimizer_name)
    return source


def endpoint_policy(args: argparse.Namespace, kube: Any) -> EndpointPolicy:
    """``run``'s HTTP policy from its flags (docs/deploy.md, "Endpoints")."""
    from controlloop.cluster.httpauth import build_policy

    try:
        return build_policy(
            mode=getattr(args, "http_auth", "auto"), in_cluster=bool(args.in_cluster),
            token_file=getattr(args, "http_token_file", None),
            invoke=getattr(args, "invoke", "on") == "on",
            invoke_per_minute=float(getattr(args, "invoke_rate", 6.0)),
            metrics_auth=bool(getattr(args, "metrics_auth", False)),
            api_client=kube.api_client)
    except ValueError as exc:
        raise ConfigError([str(exc)]) from None


class ReloadingLoadSource:
    """The Prometheus load source for the current ``controller.prometheus`` settings:
    rebuilt when an edit changes them (an invalid one keeps the last good source)."""

    def __init__(self, current: Callable[[], Any], initial: Any) -> None:
        from controlloop.cluster.prom import PrometheusLoadSource

        self._current = current
        self._config = current()
        self._source = PrometheusLoadSource(initial)

    def read_load(self, *, namespace: str, pods: Sequence[str], model: str | None = None) -> Any:
        return self._current_source().read_load(namespace=namespace, pods=pods, model=model)

    def read_loads(self, requests: Sequence[Any]) -> list[Any]:
        """All servers of a cycle at once (grouped queries, see PrometheusLoadSource)."""
        return self._current_source().read_loads(requests)  # type: ignore[no-any-return]

    def _current_source(self) -> Any:
        config = self._current()
        if config != self._config:
            from controlloop.cluster.prom import PrometheusLoadSource

            try:
                self._source = PrometheusLoadSource(prometheus_settings(config))
                log.info("prometheus settings reloaded: %s", self._source.settings.describe())
            except (ValueError, TypeError) as exc:
                log.error("invalid prometheus settings, keeping the last good ones: %s", exc)
            self._config = config
        return self._source


def prometheus_settings(p: Any) -> Any:
    from controlloop.cluster.prom import GroupedQueries, PrometheusSettings, QueryTemplates

    grouped = getattr(p, "grouped_queries", None)
    return PrometheusSettings(
        url=p.url, bearer_token_file=p.bearer_token_file, ca_file=p.ca_file,
        insecure=p.insecure, timeout_s=p.timeout_seconds, retries=p.retries, window=p.window,
        staleness_s=p.staleness_seconds, queries=QueryTemplates(**p.queries),
        grouped_queries=None if grouped is None else GroupedQueries(**grouped),
    )


def follow_interval(scheduler: Any, interval_of: Callable[[], float], interval: float) -> Any:
    """A report hook that reschedules the cycle when ``intervalSeconds`` is edited."""
    current = [interval]

    def hook(_report: Any) -> None:
        wanted = interval_of()
        if wanted != current[0]:
            scheduler.reschedule_job("cycle", trigger="interval", seconds=wanted)
            log.info("interval changed: %.0fs -> %.0fs", current[0], wanted)
            current[0] = wanted

    return hook


def collect_garbage(_report: CycleReport) -> None:
    gc.collect()
    release_free_memory()


def run_scheduler(
    controller: Controller, interval: float, interval_of: Callable[[], float] | None = None,
    on_start: Callable[[Any], None] | None = None,
) -> None:
    from apscheduler.schedulers.blocking import BlockingScheduler

    scheduler = BlockingScheduler()
    if interval_of is not None:
        controller.on_report.append(follow_interval(scheduler, interval_of, interval))
    # after every cycle's other hooks: free its cyclic garbage (API client objects, parsed
    # responses) now, before the next cycle allocates, not when a later burst happens to
    # trigger the collector; ~0.1-0.3 s a cycle, which a 60 s interval affords (the demo
    # and tests run cycles back to back and do not pay it)
    controller.on_report.append(collect_garbage)
    scheduler.add_job(
        controller.run_cycle,
        "interval",
        seconds=interval,
        id="cycle",
        max_instances=1,
        coalesce=True,
        misfire_grace_time=max(1, int(interval)),
        next_run_time=__import__("datetime").datetime.now(),
    )

    try:
        panic = controller.specs.current()[1].behavior.panic
    except Exception:  # noqa: BLE001 - bad specs: the cycle reports them; no surge job
        panic = None
    if panic is not None and panic.enabled:
        # The surge fast path: a cheap check between cycles (it runs a cycle itself when a
        # server is about to miss its SLO; the cycle lock keeps cycles one at a time).
        scheduler.add_job(controller.check_surge, "interval", seconds=panic.check_seconds,
                          id="surge", max_instances=1, coalesce=True,
                          misfire_grace_time=max(1, int(panic.check_seconds)))

    def stop(signum: int, _frame: Any) -> None:
        log.info("received %s: finishing the running cycle, then exiting",
                 signal.Signals(signum).name)
        # shutdown(wait=True) from a signal handler would block the thread that runs it
        threading.Thread(target=scheduler.shutdown, kwargs={"wait": True}, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if on_start is not None:
        on_start(scheduler)
    scheduler.start()
