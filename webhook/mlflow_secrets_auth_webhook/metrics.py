"""Prometheus metrics on a registry owned by one app (no process-global state)."""
from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

RESULTS = ("mutated", "skipped", "already_injected", "denied", "invalid", "error", "bad_request")


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    admissions: Counter
    latency: Histogram

    @classmethod
    def create(cls) -> "Metrics":
        registry = CollectorRegistry()
        admissions = Counter(
            "mlflow_secrets_auth_webhook_admissions", "Admission reviews answered, by result.",
            ["result"], registry=registry)
        for result in RESULTS:
            admissions.labels(result=result)
        latency = Histogram(
            "mlflow_secrets_auth_webhook_admission_duration_seconds",
            "Time to answer one admission review (parse, decide, patch).",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry)
        return cls(registry, admissions, latency)
