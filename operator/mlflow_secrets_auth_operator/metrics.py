"""Prometheus metrics, on a registry the operator owns (passed in, never the global one)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.provider_calls = Counter(
            "msa_provider_calls", "Secret-manager fetches, by provider and result (ok or the "
            "condition reason).", ["provider", "result"], registry=self.registry)
        self.sync_duration = Histogram(
            "msa_sync_duration_seconds", "Time of one binding sync (identity, fetch, write).",
            ["provider"], registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.syncs = Counter("msa_syncs", "Binding syncs by result.", ["result"],
                             registry=self.registry)
        self.secret_writes = Counter("msa_secret_writes", "Credential Secrets created or "
                                     "rewritten because their content changed.",
                                     registry=self.registry)
        self.seconds_to_expiry = Gauge(
            "msa_credential_seconds_to_expiry", "Seconds until the delivered credential "
            "expires (bindings whose credential has a known expiry).", ["namespace", "binding"],
            registry=self.registry)
        self.ready = Gauge("msa_binding_ready", "1 when the binding is Ready, else 0.",
                           ["namespace", "binding"], registry=self.registry)

        # nudging pods after a rotation (nudger.py); no per-pod or per-binding labels
        self.nudges = Counter(
            "msa_pod_nudges", "Pod nudges after a rotation, by result: sent, failed (an attempt, "
            "retried), abandoned (given up), gone (the pod was deleted), dropped (queue full).",
            ["result"], registry=self.registry)
        self.nudge_delay = Histogram(
            "msa_pod_nudge_delay_seconds", "Seconds from the Secret write to the nudge patch of "
            "each pod (queueing and the operator-wide rate limit included).",
            registry=self.registry, buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
        self.nudge_jobs = Gauge("msa_pod_nudge_jobs", "Bindings whose pods are waiting to be "
                                "nudged.", registry=self.registry)

    def forget(self, namespace: str, binding: str) -> None:
        for gauge in (self.seconds_to_expiry, self.ready):
            try:
                gauge.remove(namespace, binding)
            except KeyError:
                pass
