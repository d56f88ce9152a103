"""The soak's plan and rules (bench/soak/), without a cluster: the schedule is a function of the
seed alone, holds every fault kind once and rotates every binding at the cadence; the rules name
each broken figure."""
from __future__ import annotations

import types

from bench.soak.harness import CI, FAULTS, Binding, Soak
from bench.soak.report import table, violations


def _plan(seed: int, duration: float = 300.0) -> list[tuple[float, str, str]]:
    node = types.SimpleNamespace(kube=types.SimpleNamespace(kubectl=None))
    soak = Soak(node, "/nonexistent", seed, duration, CI)
    soak.bindings = [Binding("ns-a", "vk", "kubernetes"), Binding("ns-a", "va", "approle"),
                     Binding("ns-a", "x0", "token")]
    return [(round(t, 6), action, getattr(arg, "name", arg)) for t, action, arg in
            soak.schedule()]


def test_the_schedule_is_a_function_of_the_seed():
    assert _plan(7) == _plan(7)
    assert _plan(7) != _plan(8)


def test_every_fault_kind_is_scheduled_once_inside_the_run():
    plan = _plan(3)
    faults = [arg for t, action, arg in plan if action == "fault"]
    assert sorted(faults) == sorted(FAULTS)
    assert all(0 < t < 300 for t, action, _ in plan if action != "sample")


def test_each_binding_is_rotated_at_the_fixed_cadence():
    plan = _plan(5, duration=600)
    for name in ("vk", "va", "x0"):
        times = [t for t, action, arg in plan if action == "rotate" and arg == name]
        assert len(times) >= 2
        assert all(abs(b - a - CI.rotate_every) < 1e-6 for a, b in zip(times, times[1:]))


def _report(**changes) -> dict:
    report = {"secrets": {"lost": [], "emptied": [], "orphaned": [], "duplicated": []},
              "secret_samples": 20, "labelled_pods_not_injected": [], "unexpected_failures": [],
              "burst": {"pods": 30, "created": 30, "refused": {}, "not_running_after_300s": [],
                        "all_running_seconds": 40.0, "admission_p50_ms": 20.0,
                        "admission_p99_ms": 90.0},
              "client_pods": {"ns/client-vk": {"phase": "Running", "restarts": 0,
                                               "injected": True}},
              "secret_values_in_logs": 0, "leftovers": [], "faults": [], "events": [],
              "requests": {"sent": 100, "failed": 0, "failed_by_reason": {}},
              "rotation_latency_s": {"count": 2, "p50": 1.2, "max": 1.9},
              "scale": {"overlap": 120.0}, "rss": {"op": {"first_mib": 60.0, "max_mib": 62.0,
                                                          "last_mib": 61.0, "samples": 3}}}
    report.update(changes)
    return report


def test_a_clean_run_meets_every_rule_and_renders_a_table():
    assert violations(_report()) == []
    assert "Secrets lost / emptied / orphaned / duplicated" in table(_report())


def test_each_broken_rule_is_named():
    broken = _report(secrets={"lost": ["ns/vk"], "emptied": [], "orphaned": [], "duplicated": []},
                     labelled_pods_not_injected=["ns/p"],
                     unexpected_failures=[{"pod": "ns/client-vk", "reason": "401"}],
                     client_pods={"ns/client-vk": {"phase": "Running", "restarts": 1,
                                                   "injected": True}},
                     leftovers=["interface msa0"])
    found = violations(broken)
    assert len(found) == 5
    assert any("Secrets lost" in v for v in found)
    assert any("left on the host" in v for v in found)
