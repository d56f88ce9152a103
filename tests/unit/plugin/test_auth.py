"""The auth object against real local HTTP(S) servers, driven through a real requests.Session."""
import logging
import ssl
import time

import pytest
import requests

from mlflow_secrets_auth.auth import SecretsAuth
from mlflow_secrets_auth.cache import CredentialCache
from mlflow_secrets_auth.credentials import Credential
from mlflow_secrets_auth.sources import UNCHANGED, FileSource

from .conftest import CUSTOM, TOKEN, make_tls_files
from .volume import ProjectedVolume


class ManualTimer:
    """Stands in for the one-shot timer: nothing is due until the test says time has passed."""

    def __init__(self):
        self.pending = []

    def __call__(self, delay, callback):
        self.pending.append(callback)

    def elapse(self):
        pending, self.pending = self.pending, []
        for callback in pending:
            callback()


class FrozenWall:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def session():
    s = requests.Session()
    s.trust_env = False  # no proxies or netrc from the machine running the tests
    return s


def make_auth(source, allowed, tracking=None, **cache_kw):
    """The adapter over a cache of ``source``; ``cache_kw``: the cache's timer, interval, clock."""
    return SecretsAuth(CredentialCache(source, **cache_kw),
                       allowlist_values=lambda: (allowed, tracking))


def volume(tmp_path, files):
    vol = ProjectedVolume(tmp_path / "creds")
    vol.write(files)
    return vol


def plugin_warnings(caplog):
    return [r.getMessage() for r in caplog.records
            if r.name == "mlflow_secrets_auth" and r.levelno == logging.WARNING]


def test_the_bearer_header_is_set_on_requests_to_an_allowed_host(tmp_path, serve):
    srv = serve()
    auth = make_auth(FileSource(str(volume(tmp_path, {"token": TOKEN}).root)), None, srv.url())
    assert session().get(srv.url() + "/api", auth=auth).status_code == 200
    assert srv.requests[0]["headers"]["Authorization"] == "Bearer " + TOKEN


def test_a_custom_header_is_set_verbatim(tmp_path, serve):
    srv = serve()
    vol = volume(tmp_path, {"header-name": "X-MLflow-Auth", "header-value": CUSTOM})
    auth = make_auth(FileSource(str(vol.root)), "127.0.0.1:%d" % srv.port)
    session().post(srv.url() + "/api", json={"a": 1}, auth=auth)
    assert srv.requests[0]["headers"]["X-MLflow-Auth"] == CUSTOM
    assert "Authorization" not in srv.requests[0]["headers"]


def test_a_host_not_allowed_gets_no_header_and_one_warning_naming_the_variable(
        tmp_path, serve, caplog):
    srv = serve()
    auth = make_auth(FileSource(str(volume(tmp_path, {"token": TOKEN}).root)), "mlflow.example.com")
    s = session()
    for _ in range(3):
        s.get(srv.url() + "/api", auth=auth)
    assert all("Authorization" not in r["headers"] for r in srv.requests)
    warnings = plugin_warnings(caplog)
    assert len(warnings) == 1
    assert "127.0.0.1:%d" % srv.port in warnings[0]
    assert "MLFLOW_SECRETS_ALLOWED_HOSTS" in warnings[0]


def test_another_port_on_the_tracking_host_is_refused_by_default(tmp_path, serve):
    srv, other = serve(), serve()
    auth = make_auth(FileSource(str(volume(tmp_path, {"token": TOKEN}).root)), None, srv.url())
    session().get(other.url() + "/api", auth=auth)
    assert "Authorization" not in other.requests[0]["headers"]


def test_a_changed_tracking_uri_is_honoured_without_a_restart(tmp_path, serve):
    first, second = serve(), serve()
    env = {"tracking": first.url()}
    source = FileSource(str(volume(tmp_path, {"token": TOKEN}).root))
    auth = SecretsAuth(CredentialCache(source, timer=ManualTimer()),
                       allowlist_values=lambda: (None, env["tracking"]))
    s = session()
    s.get(first.url(), auth=auth)
    env["tracking"] = second.url()  # what mlflow.set_tracking_uri does to the environment
    s.get(second.url(), auth=auth)
    s.get(first.url(), auth=auth)
    assert second.requests[0]["headers"]["Authorization"] == "Bearer " + TOKEN
    assert [("Authorization" in r["headers"]) for r in first.requests] == [True, False]


def test_a_redirect_to_a_host_not_allowed_loses_the_custom_header(tmp_path, serve, caplog):
    elsewhere = serve()
    origin = serve(lambda req, n: (307, {"Location": elsewhere.url("localhost") + "/x"}, b""))
    vol = volume(tmp_path, {"header-name": "X-MLflow-Auth", "header-value": CUSTOM})
    auth = make_auth(FileSource(str(vol.root)), None, origin.url())
    r = session().post(origin.url() + "/api", json={}, auth=auth)
    assert r.status_code == 200 and len(elsewhere.requests) == 1
    assert origin.requests[0]["headers"]["X-MLflow-Auth"] == CUSTOM
    assert "X-MLflow-Auth" not in elsewhere.requests[0]["headers"]
    assert any("redirect to localhost:%d" % elsewhere.port in w for w in plugin_warnings(caplog))


def test_a_redirect_within_the_allowed_host_keeps_the_header(tmp_path, serve):
    def respond(req, n):
        return (302, {"Location": "/final"}, b"") if req["target"] == "/start" else (200, {}, b"")
    srv = serve(respond)
    vol = volume(tmp_path, {"header-name": "X-MLflow-Auth", "header-value": CUSTOM})
    auth = make_auth(FileSource(str(vol.root)), None, srv.url())
    session().get(srv.url() + "/start", auth=auth)
    assert [r["headers"].get("X-MLflow-Auth") for r in srv.requests] == [CUSTOM, CUSTOM]


def test_a_rotated_volume_is_used_at_the_next_poll_without_a_restart(tmp_path, serve):
    srv = serve()
    vol = volume(tmp_path, {"token": "old-token"})
    timer = ManualTimer()
    auth = make_auth(FileSource(str(vol.root)), None, srv.url(), timer=timer)
    s = session()
    s.get(srv.url(), auth=auth)
    vol.write({"token": "new-token"})
    timer.elapse()  # the poll is due
    s.get(srv.url(), auth=auth)
    assert [q["headers"]["Authorization"] for q in srv.requests] == [
        "Bearer old-token", "Bearer new-token"]


class CountingSource(FileSource):
    def __init__(self, directory):
        super().__init__(directory)
        self.polls = 0

    def poll(self, force=False):
        self.polls += 1
        return super().poll(force)


def test_the_files_are_not_read_per_request(tmp_path):
    timer = ManualTimer()
    source = CountingSource(str(volume(tmp_path, {"token": TOKEN}).root))
    auth = make_auth(source, "h", timer=timer)
    req = requests.Request("GET", "http://h/api").prepare()
    for _ in range(1000):
        auth(req)
    assert source.polls == 1
    timer.elapse()
    auth(req)
    assert source.polls == 2


def rotating_server(serve, accepted, **kw):
    """401 unless the request carries ``Bearer <accepted>``; ``kw['delay_after']`` slows replies."""
    def respond(req, n):
        if n > kw.get("delay_after", 10**9):
            time.sleep(kw["delay"])
        if req["headers"].get("Authorization") == "Bearer " + accepted:
            return 200, {}, b"{}"
        return 401, {}, b"{}"
    return serve(respond, kw.get("ssl_context"))


def test_a_401_rereads_the_volume_once_and_resends(tmp_path, serve):
    srv = rotating_server(serve, "new-token")
    vol = volume(tmp_path, {"token": "old-token"})
    auth = make_auth(FileSource(str(vol.root)), None, srv.url(), timer=ManualTimer())
    s = session()
    s.get(srv.url(), auth=auth)  # loads old-token; the frozen clock never reaches the next check
    vol.write({"token": "new-token"})
    r = s.post(srv.url() + "/api", json={"k": "v"}, auth=auth)
    assert r.status_code == 200
    assert [q["headers"]["Authorization"] for q in srv.requests[1:]] == [
        "Bearer old-token", "Bearer new-token"]
    assert srv.requests[-1]["body"] == b'{"k": "v"}'
    assert [h.status_code for h in r.history] == [401]


def test_a_401_with_an_unchanged_credential_is_not_resent(tmp_path, serve):
    srv = rotating_server(serve, "never")
    auth = make_auth(FileSource(str(volume(tmp_path, {"token": TOKEN}).root)), None, srv.url())
    assert session().get(srv.url(), auth=auth).status_code == 401
    assert len(srv.requests) == 1


def test_a_403_after_rotation_is_resent_only_once(tmp_path, serve):
    srv = serve(lambda req, n: (403, {}, b""))
    vol = volume(tmp_path, {"token": "one"})
    auth = make_auth(FileSource(str(vol.root)), None, srv.url(), timer=ManualTimer())
    s = session()
    s.get(srv.url(), auth=auth)
    vol.write({"token": "two"})
    assert s.get(srv.url(), auth=auth).status_code == 403
    assert [q["headers"]["Authorization"] for q in srv.requests] == [
        "Bearer one", "Bearer one", "Bearer two"]


def test_the_resend_after_401_keeps_tls_verification(tmp_path, serve):
    cert, key = make_tls_files(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv = rotating_server(serve, "new-token", ssl_context=ctx)
    url = srv.url(scheme="https")
    vol = volume(tmp_path, {"token": "old-token"})
    auth = make_auth(FileSource(str(vol.root)), None, url, timer=ManualTimer())
    s = session()
    s.get(url, auth=auth, verify=cert)
    vol.write({"token": "new-token"})
    # Without the original verify= the re-send would use the default CA bundle and fail.
    assert s.get(url, auth=auth, verify=cert).status_code == 200
    assert len(srv.requests) == 3


def test_the_resend_after_401_keeps_the_timeout(tmp_path, serve):
    srv = rotating_server(serve, "new-token", delay_after=2, delay=3.0)
    vol = volume(tmp_path, {"token": "old-token"})
    auth = make_auth(FileSource(str(vol.root)), None, srv.url(), timer=ManualTimer())
    s = session()
    s.get(srv.url(), auth=auth)
    vol.write({"token": "new-token"})
    with pytest.raises(requests.exceptions.ReadTimeout):  # the re-send waits 3 s without it
        s.get(srv.url(), auth=auth, timeout=0.5)
    assert len(srv.requests) == 3


def test_the_resend_after_401_goes_through_the_same_proxy(tmp_path, serve):
    proxy = rotating_server(serve, "new-token")
    target = "http://mlflow.invalid:5000/api/2.0/mlflow/experiments/search"
    vol = volume(tmp_path, {"token": "old-token"})
    auth = make_auth(FileSource(str(vol.root)), "mlflow.invalid:5000", timer=ManualTimer())
    s = session()
    proxies = {"http": proxy.url()}
    s.get(target, auth=auth, proxies=proxies)
    vol.write({"token": "new-token"})
    assert s.get(target, auth=auth, proxies=proxies).status_code == 200
    assert [q["target"] for q in proxy.requests] == [target] * 3


def test_an_expired_credential_warns_once_per_expiry(tmp_path, caplog):
    timer, wall = ManualTimer(), FrozenWall(2000000000.0)  # 2033
    vol = volume(tmp_path, {"token": TOKEN, "expires-at": "2030-01-01T00:00:00Z"})
    auth = make_auth(FileSource(str(vol.root)), "h", timer=timer, wall_clock=wall)
    req = requests.Request("GET", "http://h/").prepare()
    for _ in range(5):
        auth(req)
        timer.elapse()
    assert req.headers["Authorization"] == "Bearer " + TOKEN  # still sent; the server decides
    vol.write({"token": TOKEN, "expires-at": "2031-01-01T00:00:00Z"})
    for _ in range(5):
        auth(req)
        timer.elapse()
    expired = [w for w in plugin_warnings(caplog) if "expired" in w]
    assert len(expired) == 2
    assert "2030-01-01T00:00:00Z" in expired[0] and "2031-01-01T00:00:00Z" in expired[1]


def test_a_credential_not_yet_expired_does_not_warn(tmp_path, caplog):
    vol = volume(tmp_path, {"token": TOKEN, "expires-at": "2999-01-01T00:00:00Z"})
    auth = make_auth(FileSource(str(vol.root)), "h")
    auth(requests.Request("GET", "http://h/").prepare())
    assert plugin_warnings(caplog) == []


def test_a_missing_directory_sends_no_header_and_says_how_to_fix_it_once(tmp_path, caplog):
    timer = ManualTimer()
    auth = make_auth(FileSource(str(tmp_path / "absent")), "h", timer=timer)
    for _ in range(3):
        req = auth(requests.Request("GET", "http://h/").prepare())
        timer.elapse()
    assert "Authorization" not in req.headers
    warnings = plugin_warnings(caplog)
    assert len(warnings) == 1 and "MLFLOW_SECRETS_AUTH_DIR" in warnings[0]


class FlakySource:
    def __init__(self):
        self.calls = 0

    def poll(self, force=False):
        self.calls += 1
        if self.calls == 1:
            return Credential("Authorization", "Bearer " + TOKEN)
        raise ConnectionError("manager down")

    def describe(self):
        return "a flaky manager"


def test_an_outage_keeps_the_last_good_credential(caplog):
    timer = ManualTimer()
    auth = make_auth(FlakySource(), "h", timer=timer)
    for _ in range(3):
        req = auth(requests.Request("GET", "http://h/").prepare())
        timer.elapse()
    assert req.headers["Authorization"] == "Bearer " + TOKEN
    assert any("keeping the last good one" in w for w in plugin_warnings(caplog))


class StaticSource:
    def poll(self, force=False):
        return UNCHANGED

    def describe(self):
        return "nothing"


def test_without_any_credential_the_request_is_left_untouched():
    auth = make_auth(StaticSource(), "h")
    req = requests.Request("GET", "http://h/", headers={"X": "1"}).prepare()
    auth(req)
    assert dict(req.headers) == {"X": "1"} and req.hooks["response"] == []


def test_a_forked_child_polls_on_its_first_request(tmp_path):
    import os

    timer = ManualTimer()
    vol = volume(tmp_path, {"token": "parent-token"})
    auth = make_auth(FileSource(str(vol.root)), "h", timer=timer)
    auth(requests.Request("GET", "http://h/").prepare())
    vol.write({"token": "child-token"})
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's timer never fires here
        req = auth(requests.Request("GET", "http://h/").prepare())
        os.write(write, req.headers["Authorization"].encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    assert os.read(read, 100) == b"Bearer child-token"


@pytest.mark.parametrize("url", [
    "http://h.evil.com/api", "http://h:50001/api", "http://h:5000@evil.com/api",
    "http://evil.com/http://h:5000/",
])
def test_a_host_once_allowed_does_not_admit_look_alike_urls(tmp_path, url):
    auth = make_auth(FileSource(str(volume(tmp_path, {"token": TOKEN}).root)), "h:5000")
    allowed = auth(requests.Request("GET", "http://h:5000/api").prepare())
    assert allowed.headers["Authorization"] == "Bearer " + TOKEN
    other = auth(requests.Request("GET", url).prepare())
    assert other.headers.get("Authorization") != "Bearer " + TOKEN


def test_concurrent_requests_during_rotations_never_mix_a_header_name_with_another_value(tmp_path):
    import threading

    vol = volume(tmp_path, {"header-name": "X-Version-0", "header-value": "value-0"})
    auth = make_auth(FileSource(str(vol.root)), "h", interval=0.0)
    stop, bad, sent = threading.Event(), [], []

    def client():
        while not stop.is_set():
            req = auth(requests.Request("GET", "http://h/").prepare())
            pairs = [(k, v) for k, v in req.headers.items() if k.startswith("X-Version-")]
            sent.append(pairs)
            if len(pairs) != 1 or pairs[0][0][-1] != pairs[0][1][-1]:
                bad.append(pairs)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(1, 40):
        vol.write({"header-name": "X-Version-%d" % (i % 10), "header-value": "value-%d" % (i % 10)})
        stop.wait(0.005)  # kubelet rotates far less often; let some requests through each version
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert sent and not bad, bad[:3]
    assert len({p[0][0] for p in sent if p}) > 1  # rotations were seen while sending


def test_a_streamed_body_is_not_resent_after_401(tmp_path, serve):
    srv = rotating_server(serve, "new-token")
    vol = volume(tmp_path, {"token": "old-token"})
    auth = make_auth(FileSource(str(vol.root)), None, srv.url(), timer=ManualTimer())
    s = session()
    s.get(srv.url(), auth=auth)
    vol.write({"token": "new-token"})
    r = s.post(srv.url(), data=iter([b"a", b"b"]), auth=auth)
    assert r.status_code == 401 and len(srv.requests) == 2


class SlowFirstLoad:
    def __init__(self):
        self.polls = 0

    def poll(self, force=False):
        self.polls += 1
        if self.polls == 1:
            time.sleep(0.3)
            return Credential("Authorization", "Bearer " + TOKEN)
        return UNCHANGED

    def describe(self):
        return "a slow first read"


def test_requests_racing_the_first_load_wait_for_it_instead_of_going_without(tmp_path):
    import threading

    auth = make_auth(SlowFirstLoad(), "h", timer=ManualTimer())
    results = []

    def client():
        results.append(auth(requests.Request("GET", "http://h/").prepare()).headers.get(
            "Authorization"))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == ["Bearer " + TOKEN] * 4


def test_a_zero_check_interval_polls_on_every_request_without_timers(tmp_path):
    timer = ManualTimer()
    source = CountingSource(str(volume(tmp_path, {"token": TOKEN}).root))
    auth = make_auth(source, "h", interval=0.0, timer=timer)
    for _ in range(3):
        auth(requests.Request("GET", "http://h/").prepare())
    assert source.polls == 3 and timer.pending == []
