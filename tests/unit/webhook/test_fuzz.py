"""Fuzzing /mutate with hostile and malformed AdmissionReviews (hypothesis, >= 10,000 bodies).

Every answer must be below 500; every patch returned must apply to the pod it was computed for,
and the patched pod must count as injected (a second admission leaves it alone).
"""
import contextlib
import copy
import json
import os

import jsonpatch
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from mlflow_secrets_auth_api import MlflowAuthBinding
from mlflow_secrets_auth_webhook import Settings, create_app
from mlflow_secrets_auth_webhook.bindings import BindingSource
from mlflow_secrets_auth_webhook.mutation import build_patch, is_injected, mutate

from .conftest import load
from .helpers import decoded_patch

EXAMPLES = int(os.environ.get("MSA_FUZZ_EXAMPLES", 10_000))  # fewer only for a quick local run

RECORDED = load("pod_create.json")
BINDING = load("binding_ready.json")

# Strings that stress JSON pointers, env expansion and shells.
nasty = st.sampled_from(["", "/", "~", "~1", "~0", "a/b", "$(PYTHONPATH)", "PYTHONPATH",
                         "MLFLOW_TRACKING_AUTH", "MLFLOW_SECRETS_AUTH_DIR", "/mlflow-secrets-auth",
                         "/var/run/secrets/mlflow-secrets-auth", "mlflow-secrets-auth/injected",
                         "mlflow-secrets-auth/binding", "mlflow-secrets-auth/inject", "true", "mlflow",
                         "other", "-", "0", "\u0000", "é", "../..", "mlflow-secrets-auth-plugin",
                         "mlflow-secrets-auth-credential", "mlflow-secrets-auth-init"])
text = st.one_of(nasty, st.text(max_size=12))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), text)
anything = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(text, inner, max_size=3)), max_leaves=8)


def maybe(strategy, garbage=anything):
    """A field that is mostly the right thing, else absent, null or garbage."""
    odd = st.one_of(st.just(...), st.none(), garbage)
    return st.integers(0, 9).flatmap(lambda roll: odd if roll == 0 else strategy)


def mostly(value):
    return maybe(st.just(value), garbage=st.one_of(st.just(...), anything))


def obj(**fields):
    """A dict whose fields are drawn with `maybe` semantics (... means absent)."""
    return st.fixed_dictionaries({k: v for k, v in fields.items()}).map(
        lambda d: {k: v for k, v in d.items() if v is not ...})


env_var = obj(name=maybe(text), value=maybe(text),
              valueFrom=maybe(st.just({"configMapKeyRef": {"name": "c", "key": "k"}})))
mount = obj(name=maybe(text), mountPath=maybe(text))
container = obj(name=maybe(text), image=maybe(text), env=maybe(st.lists(env_var, max_size=4)),
                envFrom=maybe(st.lists(st.just({"configMapRef": {"name": "x"}}), max_size=1)),
                volumeMounts=maybe(st.lists(mount, max_size=3)))
string_map = st.dictionaries(text, text, max_size=3)
labels = st.one_of(st.just({"mlflow-secrets-auth/inject": "true"}),
                   string_map.map(lambda d: {**d, "mlflow-secrets-auth/inject": "true"}),
                   string_map.map(lambda d: {**d, "mlflow-secrets-auth/inject": "true"}), string_map)
pod = obj(
    metadata=maybe(obj(name=maybe(text), namespace=maybe(text), labels=maybe(labels),
                       annotations=maybe(string_map))),
    spec=maybe(obj(containers=maybe(st.lists(container, max_size=3)),
                   initContainers=maybe(st.lists(container, max_size=2)),
                   volumes=maybe(st.lists(obj(name=maybe(text)), max_size=3)),
                   serviceAccountName=maybe(st.sampled_from(["trainer", "default", "x"])))),
)
request = obj(uid=maybe(text), kind=maybe(st.sampled_from([{"group": "", "version": "v1", "kind": "Pod"}] * 4
                                                           + [{"group": "apps", "version": "v1", "kind": "Pod"}])),
              operation=maybe(st.sampled_from(["CREATE"] * 4 + ["UPDATE", "DELETE"])),
              namespace=maybe(st.sampled_from(["team-a"] * 4 + [""])), object=maybe(pod), dryRun=maybe(st.booleans()))
review = obj(apiVersion=mostly("admission.k8s.io/v1"), kind=mostly("AdmissionReview"), request=maybe(request))


# Plausible pods: what a real API server sends, with every optional part present, absent or null.
def optional_list(strategy, max_size=3):
    return st.one_of(st.none(), st.lists(strategy, max_size=max_size))


good_env = st.fixed_dictionaries({"name": text}, optional={
    "value": text, "valueFrom": st.just({"secretKeyRef": {"name": "s", "key": "k"}})})
good_mount = st.fixed_dictionaries({"name": text, "mountPath": text}, optional={"readOnly": st.booleans()})
good_container = st.fixed_dictionaries({"name": text, "image": st.just("python:3.11")}, optional={
    "env": optional_list(good_env, 5), "volumeMounts": optional_list(good_mount),
    "envFrom": optional_list(st.just({"configMapRef": {"name": "x"}}), 1)})
annotations = st.dictionaries(st.one_of(text, st.sampled_from(
    ["mlflow-secrets-auth/binding", "mlflow-secrets-auth/injected"])), st.one_of(
    text, st.sampled_from(["mlflow", "other", "true"])), max_size=3)


@st.composite
def plausible_review(draw):
    body = copy.deepcopy(RECORDED)
    pod = body["request"]["object"]
    pod["spec"]["containers"] = draw(st.lists(good_container, min_size=1, max_size=3))
    for key, strategy in (("initContainers", optional_list(good_container, 2)),
                          ("volumes", optional_list(st.fixed_dictionaries({"name": text, "emptyDir": st.just({})}))),
                          ("serviceAccountName", st.sampled_from(["trainer", "default"]))):
        if draw(st.booleans()):
            pod["spec"][key] = draw(strategy)
        else:
            pod["spec"].pop(key, None)
    if draw(st.booleans()):
        pod["metadata"]["annotations"] = draw(st.one_of(st.none(), annotations))
    if draw(st.integers(0, 9)) == 0:
        pod.pop("metadata")
    return body


@st.composite
def recorded_with_a_hole(draw):
    """The recorded review with one subtree replaced by garbage."""
    body = copy.deepcopy(RECORDED)
    node, path = body, []
    while isinstance(node, (dict, list)) and node and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node))))
        path.append(key)
        node = node[key]
    if not path:
        return draw(anything)
    parent = body
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = draw(anything)
    return body


def binding_variant(index):
    ready = copy.deepcopy(BINDING)
    unready = copy.deepcopy(BINDING)
    unready["status"]["conditions"][0]["status"] = "False"
    unwritten = copy.deepcopy(BINDING)
    unwritten["status"] = {}
    other = copy.deepcopy(BINDING)
    other["metadata"]["name"] = "other"
    broken = copy.deepcopy(BINDING)
    broken["spec"] = {"provider": "vault"}
    return [[], [ready], [unready], [unwritten], [ready, other], [broken], [{"metadata": None}]][index]


@pytest.fixture(scope="module")
def clients():
    """One live TestClient (one event loop portal) per binding variant, for the whole run."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(TestClient(create_app(Settings(inject_image="img"),
                                                         BindingSource(lambda ns, b=binding_variant(i): b))))
               for i in range(7)]


# pytest-timeout is the suite's hang guard (600 s, signal method): on a loaded machine this run
# can outlast it, and the signal method raises pytest's Failed inside whichever example is running.
# Hypothesis takes Failed for a falsifying example, replays it, sees it pass, and reports a
# FlakyFailure that hides the timeout. So this test's guard is the thread method (a hang is reported
# as a hang: stacks dumped, run stopped, never turned into an example) with room for the machine's
# load (10,000 examples take about 4 minutes on an idle 2-core machine). No example has a deadline.
@pytest.mark.timeout(3600, method="thread")
@hsettings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
           suppress_health_check=list(HealthCheck))
@given(body=st.integers(0, 9).flatmap(lambda roll: plausible_review() if roll < 5 else review if roll < 7
                                      else st.one_of(recorded_with_a_hole(), anything, st.binary(max_size=64))),
       bindings=st.sampled_from([1, 1, 1, 2, 4, 0, 3, 5, 6]))
def test_hostile_reviews_never_get_a_5xx_and_patches_always_apply(clients, body, bindings):
    content = body if isinstance(body, bytes) else json.dumps(body)
    reply = clients[bindings].post("/mutate", content=content)
    assert reply.status_code < 500
    if reply.status_code != 200:
        assert reply.status_code == 400
        return
    answer = reply.json()
    assert answer["response"]["uid"] == body["request"]["uid"]
    patch = decoded_patch(answer)
    if patch:
        assert answer["response"]["allowed"] is True
        result = jsonpatch.apply_patch(body["request"]["object"], patch)
        assert is_injected(result)


@hsettings(max_examples=max(EXAMPLES // 5, 100), deadline=None, database=None, derandomize=True,
           suppress_health_check=list(HealthCheck))
@given(body=plausible_review(), others=st.lists(good_container, max_size=2), order=st.randoms())
def test_the_patch_takes_any_plausible_pod_exactly_to_its_mutated_copy(body, others, order):
    """build_patch diffs only the parts of the pod mutate touches; the patch must still take the
    whole pod to mutate's whole copy. Some containers are drawn already injected-looking (mounts
    and env as mutate leaves them) so that pruned containers look alike."""
    pod = body["request"]["object"]
    binding = MlflowAuthBinding.model_validate(BINDING)
    settings = Settings(inject_image="img")
    lookalikes = [{**mutate({"spec": {"containers": [c]}}, binding, settings)["spec"]["containers"][0],
                   "name": f"lookalike-{i}"} for i, c in enumerate(others)]
    containers = pod["spec"]["containers"] + lookalikes
    order.shuffle(containers)
    pod["spec"]["containers"] = containers
    before = copy.deepcopy(pod)
    patch = build_patch(pod, binding, settings)
    assert pod == before
    assert jsonpatch.apply_patch(pod, patch) == mutate(pod, binding, settings)
