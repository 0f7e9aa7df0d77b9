"""Bad command-line input: a clear error naming the flag/variable/file and value, exit 2.

Never a traceback, never a silent default. Environment values go through the
same checks as their flags, only for the subcommand that reads them.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import pytest

from controlloop.cli import main
from controlloop.config import ConfigError
from controlloop.daemon import apply_overrides
from controlloop.fidelity import cmd_fidelity
from controlloop.loop.settings import ControllerSettings

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
SMALL = str(ROOT / "config" / "examples" / "small")

Capsys = pytest.CaptureFixture[str]


def run(capsys: Capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def copy_config(tmp_path: Path, controller_yaml: str | None = None) -> Path:
    target = tmp_path / "config"
    target.mkdir()
    for path in CONFIG.glob("*.yaml"):
        shutil.copy(path, target / path.name)
    if controller_yaml is not None:
        (target / "controller.yaml").write_text(controller_yaml)
    return target


# --- validate checks controller.yaml --------------------------------------------------------


def test_validate_prints_controller_settings(capsys: Capsys, tmp_path: Path) -> None:
    code, out, err = run(capsys, "validate", str(copy_config(tmp_path)))
    assert code == 0, err
    assert ("  controller.yaml: interval 60 s, namespaces all, capacity static, "
            "moves make-before-break") in out.splitlines()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("controller:\n  intervalSecs: 60\n",
         "controller.intervalSecs: unknown key (did you mean 'intervalSeconds'?)"),
        ("controller:\n  intervalSeconds: -60\n",
         "controller.intervalSeconds: must be > 0, got -60"),
        ("controller: [\n", "invalid YAML"),
        ("- 1\n", "expected a mapping with 'controller', got list"),
    ],
)
def test_validate_rejects_a_broken_controller_yaml(
    capsys: Capsys, tmp_path: Path, text: str, message: str
) -> None:
    directory = copy_config(tmp_path, text)
    code, out, err = run(capsys, "validate", str(directory))
    assert code == 2 and out == ""
    assert f"error: {directory / 'controller.yaml'}: " in err and message in err
    assert "Traceback" not in err


def test_validate_empty_controller_yaml_means_defaults(capsys: Capsys, tmp_path: Path) -> None:
    # Like an empty optional spec file (optimizer.yaml, capacity.yaml): all defaults.
    code, out, _ = run(capsys, "validate", str(copy_config(tmp_path, "")))
    assert code == 0
    assert "  controller.yaml: empty, defaults: interval 60 s, namespaces all" in out


def test_validate_reports_spec_and_controller_problems_together(
    capsys: Capsys, tmp_path: Path
) -> None:
    directory = copy_config(tmp_path, "controller:\n  intervalSeconds: 0\n")
    (directory / "models.yaml").unlink()
    code, _, err = run(capsys, "validate", str(directory))
    assert code == 2
    assert "missing models.yaml" in err and "controller.intervalSeconds: must be > 0" in err


# --- run: --interval and the overrides -----------------------------------------------------------


@pytest.mark.parametrize("value", ["-3", "0", "abc", "60s", "nan", "inf"])
def test_run_interval_flag_must_be_positive(capsys: Capsys, value: str) -> None:
    code, _, err = run(capsys, "run", "--config", str(CONFIG), f"--interval={value}", "--once")
    assert code == 2
    assert "argument --interval: " in err and f"got '{value}'" in err and "> 0" in err


@pytest.mark.parametrize("value", ["-3", "abc", "60s"])
def test_run_interval_variable_is_checked_like_the_flag(
    capsys: Capsys, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CONTROLLOOP_INTERVAL", value)
    code, _, err = run(capsys, "run", "--config", str(CONFIG), "--once")
    assert code == 2
    assert "argument --interval: " in err
    assert f"got '{value}' (from CONTROLLOOP_INTERVAL)" in err


def test_apply_overrides_validates() -> None:
    settings = ControllerSettings()
    assert apply_overrides(settings, {"interval": 30}).interval_seconds == 30
    with pytest.raises(ConfigError) as info:
        apply_overrides(settings, {"interval": -3})
    assert info.value.problems == [
        "--interval (env CONTROLLOOP_INTERVAL): must be > 0, got -3"
    ]
    with pytest.raises(ConfigError):
        apply_overrides(settings, {"interval": 0})


def test_apply_overrides_keeps_the_other_settings() -> None:
    settings = ControllerSettings.model_validate(
        {"prometheus": {"window": "5m"}, "leaderElection": {"leaseName": "x"}}
    )
    out = apply_overrides(settings, {"prometheus_url": "http://p:9090", "leader_elect": True,
                                     "namespaces": ["llm"]})
    assert out.prometheus.url == "http://p:9090" and out.prometheus.window == "5m"
    assert out.leader_election.enabled and out.leader_election.lease_name == "x"
    assert out.namespaces == ["llm"]


def test_run_missing_kubeconfig_says_so(capsys: Capsys, tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    code, _, err = run(capsys, "run", "--config", str(CONFIG), "--kubeconfig", str(missing),
                       "--once")
    assert code == 2
    assert (
        f"kubeconfig {missing} (from --kubeconfig or CONTROLLOOP_KUBECONFIG) does not exist"
        in err
    )
    assert "--in-cluster" in err and "Invalid kube-config" not in err


def test_run_missing_default_kubeconfig(
    capsys: Capsys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("CONTROLLOOP_KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    code, _, err = run(capsys, "run", "--config", str(CONFIG), "--once")
    assert code == 2
    assert f"kubeconfig {tmp_path}/.kube/config (the default) does not exist" in err


# --- environment values: checked at parse time, only by the subcommand using them --------------


@pytest.mark.parametrize(
    ("variable", "value", "argv", "flag"),
    [
        ("CONTROLLOOP_INTERVAL", "abc", ["run"], "--interval"),
        ("INFERNO_PORT", "x", ["serve"], "--port"),
        ("INFERNO_PORT", "70000", ["serve"], "--port"),
        ("CONTROLLOOP_LOG_LEVEL", "verbose", ["validate", SMALL], "--log-level"),
        ("CONTROLLOOP_LOG_FORMAT", "yaml", ["validate", SMALL], "--log-format"),
        ("CONTROLLOOP_DRY_RUN", "maybe", ["run"], "--dry-run"),
        ("CONTROLLOOP_LISTEN", "8080", ["run"], "--listen"),
    ],
)
def test_bad_variable_fails_its_subcommand_only(
    capsys: Capsys, monkeypatch: pytest.MonkeyPatch,
    variable: str, value: str, argv: list[str], flag: str,
) -> None:
    monkeypatch.setenv(variable, value)
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert f"error: argument {flag}: " in err and f"got '{value}' (from {variable})" in err
    assert "Traceback" not in err
    # --version, --help and the other subcommands are unaffected
    assert run(capsys, "--version")[0] == 0
    assert run(capsys, argv[0], "--help")[0] == 0
    if argv[0] in ("run", "serve"):
        assert run(capsys, "validate", SMALL)[0] == 0


def test_good_variables_are_converted(monkeypatch: pytest.MonkeyPatch) -> None:
    from controlloop.cli.main import build_parser

    monkeypatch.setenv("CONTROLLOOP_INTERVAL", "30")
    monkeypatch.setenv("CONTROLLOOP_DRY_RUN", "yes")
    monkeypatch.setenv("CONTROLLOOP_ONCE", "off")
    monkeypatch.setenv("CONTROLLOOP_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("CONTROLLOOP_NAMESPACE", "a, b")
    monkeypatch.setenv("INFERNO_PORT", "9000")
    parser = build_parser()
    args = parser.parse_args(["run"])
    assert args.interval == 30.0 and args.dry_run is True and args.once is False
    assert args.log_level == "debug" and args.namespace == ["a", "b"]
    # a flag wins over its variable
    args = parser.parse_args(["run", "--interval", "5", "--namespace", "c", "--once"])
    assert args.interval == 5.0 and args.namespace == ["c"] and args.once is True
    assert build_parser().parse_args(["serve"]).port == 9000


# --- optimize, demo, fidelity ------------------------------------------------------------------


def test_optimize_time_limit_must_be_positive(capsys: Capsys) -> None:
    code, out, err = run(capsys, "optimize", SMALL, "--solver", "milp", "--time-limit", "-1")
    assert code == 2 and out == ""
    assert "argument --time-limit: must be a number > 0, got '-1'" in err


def test_demo_out_is_a_file(capsys: Capsys, tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, out, err = run(capsys, "demo", "limited", "--out", str(afile))
    assert code == 2
    assert err.strip() == f"error: --out {afile}: exists and is not a directory"
    assert "[  1/" not in out  # checked before simulating


def test_demo_out_cannot_be_created(capsys: Capsys, tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, _, err = run(capsys, "demo", "limited", "--out", str(afile / "sub"))
    assert code == 2
    assert f"error: --out {afile / 'sub'}: cannot create the report directory" in err


@pytest.mark.parametrize("value", ["0", "-5", "nan"])
def test_fidelity_duration_must_be_positive(capsys: Capsys, value: str) -> None:
    code, _, err = run(capsys, "fidelity", SMALL, f"--duration={value}")
    assert code == 2
    assert f"argument --duration: must be a number > 0, got '{value}'" in err


def test_cmd_fidelity_checks_duration() -> None:
    args = argparse.Namespace(path=Path(SMALL), duration=0.0, seed=1, format="table",
                              solver=None, unlimited=None, service_model=None, verify=None)
    with pytest.raises(ConfigError, match="--duration: must be a number of seconds > 0"):
        cmd_fidelity(args)


# --- --help -------------------------------------------------------------------------------------


def _help(capsys: Capsys, command: str) -> str:
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    return " ".join(out.split())  # unwrap


def test_help_shows_defaults(capsys: Capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # no wrapping inside "demo-out"
    demo = _help(capsys, "demo")
    assert "(default: demo-out)" in demo and "random seed (default: 1)" in demo
    fidelity = _help(capsys, "fidelity")
    assert "simulated seconds per replica, > 0 (default: 3600)" in fidelity
    assert "(default: 1)" in fidelity and "(or read a plan)" not in fidelity
    assert "--solver {greedy,milp} solver (default:" in fidelity
    serve = _help(capsys, "serve")
    assert "(env INFERNO_HOST; default localhost)" in serve
    assert "(env INFERNO_PORT; default 8080)" in serve
    optimize = _help(capsys, "optimize")
    assert "output format (default: table)" in optimize
    assert "--limited respect capacity (the default unless" in optimize
    assert "None = they get nothing beyond what fits" in optimize
    run_help = _help(capsys, "run")
    assert "default: controller.yaml intervalSeconds" in run_help


# --- demo: per-server decisions at debug ---------------------------------------------------------


TINY = """
name: tiny
system: large
interval: 60
cycles: 2
servers: [Premium-llama_7b]
load:
  "*": {phases: [{duration: 600, rate: x1}]}
"""


@pytest.mark.parametrize("level", ["debug", "info"])
def test_demo_debug_shows_per_server_decisions(
    capsys: Capsys, tmp_path: Path, level: str
) -> None:
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(TINY)
    try:
        code, out, err = run(capsys, "demo", str(scenario), "--out", str(tmp_path / "out"),
                             "--log-level", level)
    finally:
        logging.getLogger().setLevel(logging.WARNING)
    assert code == 0
    assert "[  2/2]" in out
    decision = "cycle 1: Premium-llama_7b: "
    if level == "debug":
        assert decision in err
        assert "controlloop.loop.controller: cycle " in err  # the controller's own lines stay
    else:
        assert decision not in err and "controlloop.loop.controller: cycle " not in err


KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://127.0.0.1:9"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""


def test_run_cycle_log_directory_cannot_be_created(capsys: Capsys, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    afile = tmp_path / "afile"
    afile.write_text("x")
    target = afile / "cycles.jsonl"
    code, _, err = run(capsys, "run", "--config", str(CONFIG), "--kubeconfig", str(kubeconfig),
                       "--once", "--dry-run", "--cycle-log", str(target))
    assert code == 2
    assert f"error: --cycle-log {target}: cannot create its directory" in err


def test_validate_rejects_two_controller_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    from controlloop.cli import main

    cfg = tmp_path / "cfg"
    shutil.copytree(ROOT / "config", cfg)
    shutil.copy(cfg / "controller.yaml", cfg / "controller.yml")
    assert main(["validate", str(cfg)]) == 2
    assert (
        "both controller.yaml and controller.yml define the controller settings"
        in capsys.readouterr().err
    )


def test_an_environment_failure_exits_1_and_bad_input_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """ConfigError is for the user's input only (exit 2); a port taken or an API server
    that cannot be reached is a StartupError (exit 1), each one line on stderr."""
    import controlloop.cli.optimize as optimize_cmd
    from controlloop.config import ConfigError, StartupError

    def taken(_args: object) -> int:
        raise StartupError("--listen 0.0.0.0:8080: cannot listen: Address already in use")

    def bad(_args: object) -> int:
        raise ConfigError(["x.yaml: servers[0].maxBatchSize: must be > 0, got -1"])

    from controlloop.cli.main import main as cli_main

    monkeypatch.setattr(optimize_cmd, "cmd_optimize", taken)
    assert cli_main(["optimize", "config/examples/small"]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: --listen 0.0.0.0:8080: cannot listen: Address already in use")
    monkeypatch.setattr(optimize_cmd, "cmd_optimize", bad)
    assert cli_main(["optimize", "config/examples/small"]) == 2
    assert "maxBatchSize" in capsys.readouterr().err
