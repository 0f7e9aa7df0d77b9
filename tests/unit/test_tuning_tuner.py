"""The control loop's side of tuning: which windows are observations, the tuned system for
sizing (own fit, borrowed fit), persistence through a store, and demo scenarios' truth."""

from __future__ import annotations

import pytest

from controlloop.config import ConfigError
from controlloop.demo.cluster import EmulatedCluster
from controlloop.demo.command import REPO_CONFIG, build_system, truth_system
from controlloop.demo.loadscript import parse_scenario
from controlloop.tuning import MemoryStore, Tuner
from tests.helpers.tuning import ACC, MODEL, server, system


def test_only_windows_on_one_placement_are_observations() -> None:
    tuner = Tuner()
    sys = system()
    assert tuner.observe(sys, [server(100, 5)], "apply") == {}  # first window: unknown start
    errs = tuner.observe(sys, [server(100, 5)], "apply")
    assert set(errs) == {"ns/s1"} and not errs["ns/s1"].tuned
    # The profile (truth/1.4 on alpha) under-predicts ITL: the error says so.
    assert errs["ns/s1"].itl_error is not None and errs["ns/s1"].itl_error < -0.15
    assert tuner.observe(sys, [server(100, 6)], "apply") == {}  # replicas changed
    assert tuner.observe(sys, [server(100, 6, ready=5)], "apply") == {}  # one not ready
    est = tuner.estimators[f"{MODEL}/{ACC}"]
    assert est.accepted_total == 1


def test_tuned_system_replaces_the_profile_after_warm_up_and_says_so() -> None:
    tuner = Tuner()
    sys = system()
    rates = [60, 80, 100, 120, 140, 90, 70, 110, 130, 150, 85, 95]
    for rate in rates:
        tuner.observe(sys, [server(rate, 5), server(rate * 0.6, 3, name="s2")], "apply")
    tuned, notes = tuner.tuned_system(sys)
    key = f"{MODEL}/{ACC}"
    assert key in notes and notes[key].startswith("tuned perf alpha x1.")
    perf, orig = tuned.perf(MODEL, ACC), sys.perf(MODEL, ACC)
    assert perf is not None and orig is not None and perf.decode_parms is not None
    assert orig.decode_parms is not None
    assert perf.decode_parms.alpha / orig.decode_parms.alpha == pytest.approx(1.4, rel=0.08)
    # Other models are untouched; the model's other accelerators borrow the multipliers.
    assert tuned.perf("granite_13b", ACC) == sys.perf("granite_13b", ACC)
    other = tuned.perf(MODEL, "MI300X")
    assert other is not None and other.decode_parms is not None
    assert f"{MODEL}/MI300X" in notes and "borrowed from G2" in notes[f"{MODEL}/MI300X"]
    # Now the model error is small, and predicted with tuned values.
    errs = tuner.observe(sys, [server(100, 5)], "apply")
    assert errs["ns/s1"].tuned and abs(errs["ns/s1"].itl_error or 1) < 0.03
    # observe: learns and reports, never changes sizing; off: neither.
    assert not tuner.observe(sys, [server(100, 5)], "observe")["ns/s1"].tuned


def test_off_reports_the_profiles_error_and_learns_nothing() -> None:
    tuner = Tuner()
    for _ in range(4):
        errs = tuner.observe(system(), [server(100, 5)], "off")
    assert tuner.estimators == {}
    assert errs["ns/s1"].itl_error is not None and errs["ns/s1"].itl_error < -0.15


def test_a_backlogged_window_gives_itl_but_not_ttft() -> None:
    tuner = Tuner()
    sys = system()
    obs = tuner._observation(sys, server(100, 5, waiting=5 * 19))
    assert obs is not None and obs[0].ttft_ms is None and obs[0].itl_ms is not None
    obs = tuner._observation(sys, server(100, 5, waiting=5))
    assert obs is not None and obs[0].ttft_ms is not None


def test_learnt_state_survives_a_restart_through_the_store() -> None:
    store = MemoryStore()
    sys = system()
    first = Tuner(store=store)
    for rate in (60, 90, 120, 150, 80, 110, 140, 70):
        first.observe(sys, [server(rate, 5)], "apply")
    assert store.saves >= 7
    before = first.tuned_system(sys)[0].perf(MODEL, ACC)
    second = Tuner(store=store)  # a new process: nothing but the store
    after = second.tuned_system(sys)[0].perf(MODEL, ACC)
    assert before == after and before != sys.perf(MODEL, ACC)
    # A profile edited since: the saved state is discarded, the profile is used.
    perf = sys.perf(MODEL, ACC)
    assert perf is not None and perf.decode_parms is not None
    edited = sys.model_copy(update={"models": [
        m.model_copy(update={"decode_parms": perf.decode_parms.model_copy(
            update={"alpha": perf.decode_parms.alpha * 2})}) if m is perf else m
        for m in sys.models]})
    third = Tuner(store=store)
    assert third.tuned_system(edited)[0].perf(MODEL, ACC) == edited.perf(MODEL, ACC)


def test_a_failing_store_never_stops_the_tuner() -> None:
    class Broken:
        def load(self) -> None:
            raise OSError("unreachable")

        def save(self, doc: object) -> None:
            raise OSError("unreachable")

    tuner = Tuner(store=Broken())  # type: ignore[arg-type]
    tuner.observe(system(), [server(100, 5)], "apply")
    assert tuner.observe(system(), [server(100, 5)], "apply")


# --- demo scenarios: truth --------------------------------------------------------------

SCENARIO = """
name: t
system: large
servers: [Premium-llama_13b]
truth:
  "llama_13b/G2": {alpha: 1.4}
  "llama_13b/*": {beta: 2}
  "*/MI300X": {gamma: 3}
  "*": {delta: 0.5}
"""


def test_truth_most_specific_key_wins_and_only_the_replicas_see_it() -> None:
    sc = parse_scenario(SCENARIO, where="t.yaml")
    assert sc.truth_for("llama_13b", "G2") == {"alpha": 1.4, "beta": 1, "gamma": 1, "delta": 1}
    assert sc.truth_for("llama_13b", "MI300X")["beta"] == 2
    assert sc.truth_for("granite_13b", "MI300X")["gamma"] == 3
    assert sc.truth_for("granite_13b", "G2") == {"alpha": 1, "beta": 1, "gamma": 1, "delta": 0.5}
    system, _ = build_system(sc)
    cluster = EmulatedCluster(system, {}, capacity=None, truth=sc.truth_for,
                              rate_fn=lambda _s, _t: 60.0)
    cluster.place("Premium-llama_13b", "G2", 1)
    sim = cluster.servers["Premium-llama_13b"].replicas[0].sim
    perf = system.perf("llama_13b", "G2")
    assert sim is not None and perf is not None and perf.decode_parms is not None
    assert sim.params.alpha == pytest.approx(perf.decode_parms.alpha * 1.4)
    assert sim.params.beta == pytest.approx(perf.decode_parms.beta)
    # The controller's system is the profile; the oracle's is the truth.
    oracle = truth_system(system, sc).perf("llama_13b", "G2")
    assert oracle is not None and oracle.decode_parms is not None
    assert oracle.decode_parms.alpha == pytest.approx(perf.decode_parms.alpha * 1.4)


@pytest.mark.parametrize("text, expected", [
    ("truth: 3", "t.yaml: truth: must map"),
    ("truth: {'a/b/c': {alpha: 1}}", "t.yaml: truth.a/b/c: key must be"),
    ("truth: {'*': {alpah: 1}}", "t.yaml: truth.*.alpah: unknown parameter"),
    ("truth: {'*': {alpha: 0}}", "t.yaml: truth.*.alpha: must be a number > 0 (got 0)"),
    ("tuning: sometimes", "t.yaml: tuning: must be 'off', 'observe' or 'apply'"),
])
def test_bad_truth_names_file_field_and_value(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_scenario(f"name: t\n{text}\n", where="t.yaml")
    assert any(expected in p for p in err.value.problems), err.value.problems


def test_system_may_be_a_path_to_any_config_form(tmp_path: object) -> None:
    sc = parse_scenario(f"name: t\nsystem: {REPO_CONFIG}\nservers: [Premium-llama_13b]\n",
                        where="t.yaml")
    system, _ = build_system(sc)
    assert [s.name for s in system.servers] == ["Premium-llama_13b"]
    json_file = REPO_CONFIG / "examples" / "small"
    sc = parse_scenario(f"name: t\nsystem: {json_file}\n", where="t.yaml")
    assert build_system(sc)[0].servers


def test_a_standby_rereads_the_leaders_state_when_it_leads() -> None:
    store = MemoryStore()
    standby = Tuner(store=store)
    for _ in range(2):  # it led once and learnt a little
        standby.observe(system(), [server(100, 5)], "apply")
    assert standby.estimators
    leader = Tuner(store=store)
    for rate in (60, 90, 120, 150, 80, 110, 140, 70):
        leader.observe(system(), [server(rate, 5)], "apply")
    standby.forget()  # what the controller does while it is not the leader
    assert standby.tuned_system(system())[0] == leader.tuned_system(system())[0]
