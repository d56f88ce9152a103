"""Reading a Prometheus text exposition (the operator's and webhook's ``/metrics``, the API
server's) in tests, benchmarks and the soak: prometheus-client's own parser, one helper."""
from __future__ import annotations

from typing import Mapping

from prometheus_client.parser import text_string_to_metric_families


def metric_sum(text: str, name: str, labels: Mapping[str, str] | None = None) -> float:
    """The sum of the samples called ``name`` (as written, e.g. ``..._total``) whose labels include
    ``labels``."""
    want = dict(labels or {})
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == name and all(sample.labels.get(k) == v for k, v in want.items()))
