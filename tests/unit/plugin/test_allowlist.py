import pytest

from mlflow_secrets_auth.allowlist import Allowlist, host_port_of, parse_pattern


def allows(allowed, url, tracking=None):
    host, port = host_port_of(url)
    return Allowlist.from_values(allowed, tracking).allows(host, port)


@pytest.mark.parametrize("allowed,url", [
    ("mlflow.example.com", "https://mlflow.example.com/api"),
    ("mlflow.example.com", "http://MLflow.Example.com:5000/api"),
    ("*.internal", "http://mlflow.team-a.internal/api"),
    ("mlflow-*", "http://mlflow-prod:5000/"),
    ("mlflow:5000", "http://mlflow:5000/api"),
    ("mlflow:443", "https://mlflow/api"),
    ("mlflow:80", "http://mlflow/api"),
    ("a.example, b.example", "http://b.example/"),
    ("[::1]:5000", "http://[::1]:5000/"),
    ("*", "http://anything:1/"),
    ("[0:0::1]", "http://[::1]:8080/"),
    ("[FD00::A]:5000", "http://[fd00:0::a]:5000/"),
    ("10.0.0.*:5000", "http://10.0.0.7:5000/"),
    ("mlflow_1.local", "http://mlflow_1.local/"),
])
def test_hosts_matching_a_pattern_are_allowed(allowed, url):
    assert allows(allowed, url)


@pytest.mark.parametrize("allowed,url", [
    ("mlflow.example.com", "https://evil.example.com/"),
    ("*.internal", "http://internal/"),
    ("*.internal", "http://mlflow.internal.evil.com/"),
    ("mlflow:5000", "http://mlflow:5001/"),
    ("mlflow:443", "http://mlflow/"),
    ("mlflow.example.com", "https://mlflow.example.com@evil.com/"),
    ("mlflow.example.com", "https://evil.com/?mlflow.example.com"),
])
def test_hosts_not_matching_any_pattern_are_refused(allowed, url):
    assert not allows(allowed, url)


def test_without_an_allowlist_only_the_tracking_uri_host_and_port_are_allowed():
    tracking = "http://mlflow.team-a.svc:5000"
    assert allows(None, "http://mlflow.team-a.svc:5000/api/2.0/x", tracking)
    assert allows("", "http://mlflow.team-a.svc:5000/api/2.0/x", tracking)
    assert not allows(None, "http://mlflow.team-a.svc:5001/", tracking)
    assert not allows(None, "http://other.svc:5000/", tracking)


def test_the_tracking_uri_default_port_comes_from_its_scheme():
    assert allows(None, "https://mlflow.example.com:443/x", "https://mlflow.example.com")
    assert not allows(None, "http://mlflow.example.com/x", "https://mlflow.example.com")


@pytest.mark.parametrize("tracking", [None, "", "file:///tmp/mlruns", "databricks"])
def test_with_neither_allowlist_nor_http_tracking_uri_nothing_is_allowed(tracking):
    assert not allows(None, "http://127.0.0.1:5000/", tracking)


def test_the_description_names_the_variable_to_change():
    assert "MLFLOW_SECRETS_ALLOWED_HOSTS is unset" in Allowlist.from_values(
        None, "http://m:5000").describe()
    assert Allowlist.from_values("a,b:1", None).describe() == "MLFLOW_SECRETS_ALLOWED_HOSTS=a,b:1"


# ---- strict parsing (issue 11): a malformed pattern allows nothing and says why ----------------
@pytest.mark.parametrize("pattern,reason", [
    ("[*]", "bracketed IPv6"),
    ("[*]:5000", "bracketed IPv6"),
    ("[*.example.com]", "bracketed IPv6"),
    ("[a-z]*", "bracketed IPv6"),
    ("[::1", "bracketed IPv6"),
    ("[::1]x", "bracketed IPv6"),
    ("[1.2.3.4]", "not an IPv6 address"),
    ("[fe80::1%eth0]", "bracketed IPv6"),
    ("[::1]:0", "between 1 and 65535"),
    ("mlflow-[ab].internal", "character classes"),
    ("https://mlflow.example.com/", "a URL"),
    ("user@mlflow.example.com", "only letters"),
    ("mlflow.example.com/api", "only letters"),
    ("mlflow:*", "only letters"),
    ("mlflow:70000", "between 1 and 65535"),
    ("::1", "only letters"),
    ("mlflow:5000:1", "only letters"),
])
def test_a_malformed_pattern_is_refused_with_the_reason_and_allows_no_host(pattern, reason):
    with pytest.raises(ValueError, match=reason):
        parse_pattern(pattern)
    allowlist = Allowlist.from_values(pattern, "http://127.0.0.1:5000")
    assert allowlist.patterns == [] and allowlist.invalid[0][0] == pattern
    for url in ("http://127.0.0.1:5000/", "http://evil.example:5000/", "http://[::1]:5000/",
                "https://mlflow.example.com/", "http://a:80/"):
        assert not allows(pattern, url, "http://127.0.0.1:5000"), url


def test_a_malformed_pattern_does_not_disable_the_valid_ones():
    allowlist = Allowlist.from_values("a.example, [*], b.example:5000", None)
    assert [p[1] for p in allowlist.patterns] == ["a.example", "b.example"]
    assert allows("a.example, [*]", "http://a.example/")
    assert not allows("a.example, [*]", "http://evil.example/")
    assert "ignored as malformed: [*]" in allowlist.describe()


def test_an_ipv6_pattern_is_exact_never_a_glob():
    assert not allows("[::1]", "http://[::2]/")
    assert not allows("[fd00::1]", "http://fd00.evil/")


def test_a_tracking_uri_host_is_matched_literally_not_as_a_glob():
    assert not allows(None, "http://evil.example:5000/", "http://*:5000")
    assert not allows(None, "http://mlflowx:5000/", "http://mlflow?:5000")
    assert allows(None, "http://[::1]:5000/", "http://[0::1]:5000")


def test_urls_the_standard_parser_cannot_split_are_refused_not_raised():
    assert host_port_of("http://[::1/x") == ("", 0)
    assert not allows("*", "http://[::1/x")
