"""dev.stack.metrics: sums the samples of one name whose labels include the given ones."""
from dev.stack.metrics import metric_sum

TEXT = """# HELP msa_pod_nudges_total Pod nudges.
# TYPE msa_pod_nudges_total counter
msa_pod_nudges_total{result="sent",namespace="a"} 3.0
msa_pod_nudges_total{result="sent",namespace="b"} 4.0
msa_pod_nudges_total{result="failed",namespace="a"} 1.0
# HELP apiserver_request_total Requests.
# TYPE apiserver_request_total counter
apiserver_request_total{verb="PATCH",resource="secrets",code="200"} 7
"""


def test_sums_the_samples_whose_labels_include_the_given_ones():
    assert metric_sum(TEXT, "msa_pod_nudges_total", {"result": "sent"}) == 7.0
    assert metric_sum(TEXT, "msa_pod_nudges_total") == 8.0
    assert metric_sum(TEXT, "apiserver_request_total", {"verb": "PATCH"}) == 7.0
    assert metric_sum(TEXT, "msa_pod_nudges_total", {"result": "other"}) == 0.0
