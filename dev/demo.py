"""`make demo`: the whole system on the local stack, step by step, in plain words.

    python -m dev.demo          bring up the stack, the operator and the webhook; run the scenario
    python -m dev.demo down     stop everything (same as `python -m dev.stack down`)

As root, the demo runs on the local node (`python -m dev.stack up kube node ...`, see
docs/local-stack.md): the chart is installed with helm (operator and webhook pods), OpenBao and
MLflow listen on the node's bridge address, and the pod runs on the real kubelet from the MLflow
client image. Without root, or with `python -m dev.demo standin`, it uses the operator and webhook
as local processes and `dev/kubelet.py` runs the pod.

With `KUBECONFIG` set, the demo installs the Helm chart into that cluster instead (see
`real_cluster`); unset it to use the local stack.

The scenario: a team stores its MLflow credential in OpenBao; an MlflowAuthBinding tells the
operator to keep it in a Secret (Vault Kubernetes auth as the team's own ServiceAccount); a pod
labelled `mlflow-secrets-auth/inject: "true"` is created through the API server and mutated by the
webhook; a local kubelet runs it (init container copy, Secret as files with the `..data` swap) with a
plain MLflow client from a venv that never installed this project. The credential is rotated in
OpenBao while the client keeps logging; the old MLflow user is then deleted; the client never
restarts and no call fails.
"""
from __future__ import annotations

import json
import secrets
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from mlflow_secrets_auth_api import ANNOTATION_SYNC, API_VERSION, CRD_NAME, KIND

from dev.stack import pod_client

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = ["kube", "openbao", "mlflow-basic", "operator", "webhook"]
NODE_COMPONENTS = ["kube", "node", "openbao", "mlflow-basic"]
CHART_NAMESPACE = "mlflow-secrets-auth"
REFRESH = "15s"

CLIENT = pod_client.script()  # the in-pod MLflow client (dev/stack/pod_client.py)


def say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def detail(text: str) -> None:
    print(textwrap.indent(text.rstrip(), "    "), flush=True)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"demo: timed out after {timeout:.0f}s waiting for {what}")


class Stack:
    """Clients for the components `python -m dev.stack up` recorded."""

    def __init__(self) -> None:
        from dev.stack.__main__ import load_state
        from dev.stack.kube import ExistingKube
        from dev.stack.mlflow_server import MlflowServer
        from dev.stack.openbao import OpenBao

        components = load_state()["components"]
        self.kube = ExistingKube(components["kube"]["info"]["kubeconfig"])
        bao = components["openbao"]["info"]
        bao_host, bao_port = bao["addr"].split("://", 1)[1].rsplit(":", 1)
        self.openbao = OpenBao(port=int(bao_port), root_token=bao["secret_env"]["VAULT_TOKEN"],
                               host=bao_host)
        ml = components["mlflow-basic"]["info"]
        ml_host, ml_port = ml["url"].split("://", 1)[1].rsplit(":", 1)
        self.mlflow = MlflowServer(auth=True, name="mlflow-basic", host=ml_host)
        self.mlflow.port = int(ml_port)
        self.node = (components.get("node") or {}).get("info")
        self.mlflow.admin_username = ml["admin_username"]
        self.mlflow.admin_password = ml["secret_env"]["MSA_MLFLOW_BASIC_ADMIN_PASSWORD"]


def kubectl(stack: Stack, *args: str, input: str | None = None) -> str:
    return stack.kube.kubectl(*args, input=input).stdout


def setup_team(stack: Stack, ns: str) -> tuple[tuple[str, str], tuple[str, str], str]:
    """Namespace, ServiceAccount, OpenBao policy and role, two MLflow users, one experiment."""
    kubectl(stack, "create", "namespace", ns)
    kubectl(stack, "create", "serviceaccount", "mlflow-reader", "-n", ns)
    path = f"teams/{ns}/mlflow"
    stack.openbao.write_read_policy(f"{ns}-mlflow", [f"secret/data/{path}"])
    stack.openbao.write_kubernetes_role(f"{ns}-mlflow", ns, ["mlflow-reader"], [f"{ns}-mlflow"],
                                       audience="vault")
    alice = ("alice-" + ns[-5:], "pw-" + secrets.token_urlsafe(12))
    bob = ("bob-" + ns[-5:], "pw-" + secrets.token_urlsafe(12))
    experiment = ns
    status, body = stack.mlflow.request("POST", "/api/2.0/mlflow/experiments/create",
                                        {"name": experiment})
    if status != 200:
        raise SystemExit(f"demo: could not create the experiment: {status} {body}")
    for user, password in (alice, bob):
        stack.mlflow.create_user(user, password)
        # Both users must write to the same run across the rotation; MLflow's permission API
        # changes between releases, so the demo makes them admins of this throwaway server.
        stack.mlflow.set_admin(user)
    stack.openbao.client().secrets.kv.v2.create_or_update_secret(
        path=path, secret={"username": alice[0], "password": alice[1]}, mount_point="secret")
    return alice, bob, experiment


def binding_yaml(stack: Stack, ns: str) -> str:
    return textwrap.dedent(f"""\
        apiVersion: {API_VERSION}
        kind: {KIND}
        metadata:
          name: mlflow
          namespace: {ns}
        spec:
          provider:
            vault:
              address: {stack.openbao.addr}
              path: teams/{ns}/mlflow
              kvVersion: "2"
              auth:
                kubernetes: {{role: {ns}-mlflow, serviceAccountName: mlflow-reader}}
          credential: {{type: basic, format: json}}
          trackingUri: {stack.mlflow.url}
          allowedHosts: ["{stack.mlflow.host}:{stack.mlflow.port}"]
          refresh: {{interval: {REFRESH}}}
        """)


def pod_manifest(ns: str, experiment: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "trainer", "namespace": ns,
                         "labels": {"mlflow-secrets-auth/inject": "true"}},
            "spec": {"containers": [{"name": "train", "image": "python:3.11-slim",
                                     "command": ["python", "-c", CLIENT],
                                     "env": [{"name": "EXPERIMENT", "value": experiment}]}]}}


def secret_data(stack: Stack, ns: str) -> dict:
    import base64
    out = json.loads(kubectl(stack, "get", "secret", "mlflow-mlflow-auth", "-n", ns, "-o", "json"))
    return {k: base64.b64decode(v).decode() for k, v in out.get("data", {}).items()}


def run_scenario() -> int:
    stack = Stack()
    ns = "demo-" + secrets.token_hex(3)

    say(f"A team namespace `{ns}`: ServiceAccount mlflow-reader, an OpenBao role for it, and two "
        "MLflow users (the credential is alice's now, bob's after rotation)")
    alice, bob, experiment = setup_team(stack, ns)

    say("The binding: the operator reads OpenBao as the team's ServiceAccount (Vault Kubernetes auth)")
    manifest = binding_yaml(stack, ns)
    detail(manifest)
    kubectl(stack, "apply", "-f", "-", input=manifest)
    wait_for(lambda: json.loads(kubectl(stack, "get", "mab", "mlflow", "-n", ns, "-o", "json"))
             .get("status", {}).get("secretName"), 60, "the binding to be Ready")
    detail(kubectl(stack, "get", "mab", "-n", ns))
    detail(kubectl(stack, "get", "secret", "mlflow-mlflow-auth", "-n", ns))

    say("A pod labelled mlflow-secrets-auth/inject=true, created through the API server; the "
        "webhook injected:")
    kubectl(stack, "apply", "-f", "-", input=json.dumps(pod_manifest(ns, experiment)))
    pod = json.loads(kubectl(stack, "get", "pod", "trainer", "-n", ns, "-o", "json"))
    app = pod["spec"]["containers"][0]
    detail("init container: " + " ".join(pod["spec"]["initContainers"][0]["command"]))
    detail("volumes: " + ", ".join(v["name"] for v in pod["spec"]["volumes"]
                                   if v["name"].startswith("mlflow-secrets-auth")))
    detail("env: " + ", ".join(f"{e['name']}={e.get('value', '')}" for e in app["env"]
                               if e["name"] != "EXPERIMENT"))
    spec_text = json.dumps(pod)
    leaked = [v for v in (alice[1], bob[1]) if v in spec_text]
    detail("secret values in the pod spec: " + ("NONE" if not leaked else "LEAKED"))
    if leaked:
        return 1

    say("The local kubelet runs the pod: the init container copies the plugin, the Secret is "
        "mounted as files, the client is a clean venv with only MLflow")
    from dev.kubelet import PAYLOAD_IMAGE_PATH, ContainerOutput, LocalKubelet
    from dev.stack.clientenv import client_python
    python = client_python()
    work = Path(tempfile.mkdtemp(prefix="msa-demo-"))
    payload = work / "payload"
    subprocess.run([sys.executable, str(ROOT / "plugin" / "build_payload.py"), str(payload)], check=True,
                   stdout=subprocess.DEVNULL)
    with stack.kube.api_client() as api:
        kubelet = LocalKubelet(api, ns, "trainer", work / "kubelet",
                               image_paths={PAYLOAD_IMAGE_PATH: payload}, python=python)
        process = kubelet.start()
        out = ContainerOutput(process)
        of, raw = out.of, out.raw
        try:
            started = wait_for(lambda: of("started") or process.poll() is not None, 300,
                               "the MLflow client to start")
            if process.poll() is not None and not of("started"):
                detail("the client exited:\n" + "".join(raw[-30:]))
                return 1
            started = of("started")[0]
            detail(f"plugin loaded from {started['plugin']}")
            wait_for(lambda: len(of("logged")) >= 10, 60, "the first metrics")
            detail(f"run {started['run_id']}: {len(of('logged'))} metrics logged as {alice[0]}")

            say(f"Rotation: bob's credential written to OpenBao; the operator picks it up on its "
                f"{REFRESH} refresh, the kubelet swaps ..data, the plugin notices")
            stack.openbao.client().secrets.kv.v2.create_or_update_secret(
                path=f"teams/{ns}/mlflow", secret={"username": bob[0], "password": bob[1]},
                mount_point="secret")
            rotated_at = time.monotonic()
            wait_for(lambda: secret_data(stack, ns).get("username") == bob[0], 90,
                     "the operator to write the new credential")
            detail(f"Secret updated {time.monotonic() - rotated_at:.1f}s after the rotation")
            credential_dir = kubelet.volume_dirs["mlflow-secrets-auth-credential"]
            wait_for(lambda: (credential_dir / "username").read_text() == bob[0], 30,
                     "the kubelet to swap the files")
            # Revoke the old credential only once clients have switched: the plugin looks at the
            # files every MLFLOW_SECRETS_AUTH_CHECK_INTERVAL (0.5 s); docs/plugin.md, "Rotation".
            time.sleep(1.0)
            stack.mlflow.delete_user(alice[0])
            detail(f"old user {alice[0]} deleted from MLflow: only the new credential works now")
            before = len(of("logged"))
            wait_for(lambda: len(of("logged")) >= before + 20, 60, "logging with the new credential")
            detail(f"{len(of('logged')) - before} more metrics logged as {bob[0]}, same process "
                   f"(pid {process.pid})")
        except SystemExit:
            detail("last lines of the container's output:\n" + "".join(raw[-20:]))
            raise
        finally:
            kubelet.stop()
    wait_for(lambda: of("done"), 30, "the client to finish")
    errors = of("error")
    status, body = stack.mlflow.get(
        f"/api/2.0/mlflow/metrics/get-history?run_id={started['run_id']}&metric_key=loss")
    say("Result")
    detail(f"steps logged: {len(of('logged'))}, failed calls: {len(errors)}, process restarts: 0")
    for error in errors[:5]:
        detail(f"failed call at step {error['step']}: {error['error']}")
    detail(f"MLflow has {len(body.get('metrics', []))} points of `loss` for run {started['run_id']} "
           f"in experiment {experiment}")
    detail(f"MLflow UI: {stack.mlflow.url} (admin credentials: "
           f"`eval \"$({sys.executable} -m dev.stack env)\"`, then $MSA_MLFLOW_BASIC_ADMIN_USERNAME "
           "/ $MSA_MLFLOW_BASIC_ADMIN_PASSWORD)")
    detail("Stop everything: make demo-down")
    ok = status == 200 and not errors and len(body.get("metrics", [])) == len(of("logged"))
    return 0 if ok else 1


def install_chart(stack: Stack) -> None:
    """helm install of the chart on the node, from the locally built image (pullPolicy Never)."""
    from dev.stack.chart import NodeChart

    chart = NodeChart(stack.kube, stack.node["images"]["project"], CHART_NAMESPACE)
    took = chart.install(operator_replicas=2, webhook_replicas=2, timeout=300)
    detail(f"helm install --wait, then the 4 pods ready: {took:.1f}s")
    detail(kubectl(stack, "get", "pods", "-n", CHART_NAMESPACE, "-o", "wide"))


def node_pod_manifest(stack: Stack, ns: str, experiment: str) -> dict:
    pod = pod_client.manifest("trainer", stack.node["images"]["client"], {"EXPERIMENT": experiment})
    pod["metadata"]["namespace"] = ns
    return pod


def run_scenario_node() -> int:
    """The scenario on the local node: chart pods, a real kubelet, the MLflow client image."""
    from dev.stack.chart import json_log

    stack = Stack()
    if not stack.node:
        raise SystemExit("demo: no node recorded; `make demo-down`, then `make demo` as root")
    say("The chart, installed with helm on the node: the operator and the webhook as pods from the "
        "locally built image")
    install_chart(stack)

    ns = "demo-" + secrets.token_hex(3)
    say(f"A team namespace `{ns}`: ServiceAccount mlflow-reader, an OpenBao role for it, and two "
        "MLflow users (the credential is alice's now, bob's after rotation)")
    alice, bob, experiment = setup_team(stack, ns)
    kubectl(stack, "label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")

    say("The binding: the operator pod reads OpenBao (on the node's bridge address) as the team's "
        "ServiceAccount (Vault Kubernetes auth)")
    manifest = binding_yaml(stack, ns)
    detail(manifest)
    kubectl(stack, "apply", "-f", "-", input=manifest)
    wait_for(lambda: json.loads(kubectl(stack, "get", "mab", "mlflow", "-n", ns, "-o", "json"))
             .get("status", {}).get("secretName"), 120, "the binding to be Ready")
    detail(kubectl(stack, "get", "mab", "-n", ns))
    detail(kubectl(stack, "get", "secret", "mlflow-mlflow-auth", "-n", ns))

    say("A pod labelled mlflow-secrets-auth/inject=true, created through the API server; the "
        "webhook pod injected:")
    kubectl(stack, "apply", "-f", "-", input=json.dumps(node_pod_manifest(stack, ns, experiment)))
    pod = json.loads(kubectl(stack, "get", "pod", "trainer", "-n", ns, "-o", "json"))
    app = pod["spec"]["containers"][0]
    detail("init container: " + pod["spec"]["initContainers"][0]["image"] + ": "
           + " ".join(pod["spec"]["initContainers"][0]["command"]))
    detail("volumes: " + ", ".join(v["name"] for v in pod["spec"]["volumes"]
                                   if v["name"].startswith("mlflow-secrets-auth")))
    detail("env: " + ", ".join(f"{e['name']}={e.get('value', '')}" for e in app["env"]
                               if e["name"] not in ("EXPERIMENT", "HOME")))
    leaked = [v for v in (alice[1], bob[1]) if v in json.dumps(pod)]
    detail("secret values in the pod spec: " + ("NONE" if not leaked else "LEAKED"))
    if leaked:
        return 1

    def events() -> list[dict]:
        return json_log(stack.kube.kubectl, ns, "trainer", "train")

    def of(kind: str) -> list[dict]:
        return [e for e in events() if e.get("event") == kind]

    def phase() -> str:
        return kubectl(stack, "get", "pod", "trainer", "-n", ns, "-o", "jsonpath={.status.phase}")

    say("The kubelet runs the pod: the init container copies the plugin from the project's image, "
        "the Secret is a volume, the container is the MLflow client image (never this project)")
    try:
        wait_for(lambda: of("started") or phase() in ("Failed", "Succeeded"), 300,
                 "the MLflow client to start", interval=1.0)
        if not of("started"):
            detail("the pod ended:\n" + kubectl(stack, "logs", "-n", ns, "trainer",
                                                "--all-containers"))
            return 1
        started = of("started")[0]
        detail(f"node {pod['spec'].get('nodeName') or json.loads(kubectl(stack, 'get', 'pod', 'trainer', '-n', ns, '-o', 'json'))['spec']['nodeName']}; "
               f"plugin loaded from {started['plugin']}")
        wait_for(lambda: len(of("logged")) >= 10, 90, "the first metrics", interval=1.0)
        detail(f"run {started['run_id']}: {len(of('logged'))} metrics logged as {alice[0]}")

        say("Rotation: bob's credential written to OpenBao and the binding's force-sync annotation "
            "set; the operator writes the Secret and nudges the pod, the kubelet remounts it, the "
            "plugin notices")
        rotated_at = time.time()
        stack.openbao.client().secrets.kv.v2.create_or_update_secret(
            path=f"teams/{ns}/mlflow", secret={"username": bob[0], "password": bob[1]},
            mount_point="secret")
        kubectl(stack, "annotate", "mab", "mlflow", "-n", ns, "--overwrite",
                f"{ANNOTATION_SYNC}={rotated_at}")
        wait_for(lambda: secret_data(stack, ns).get("username") == bob[0], 90,
                 "the operator to write the new credential")
        detail(f"Secret updated {time.time() - rotated_at:.1f}s after the write in OpenBao")
        wait_for(lambda: any(e.get("user") == bob[0] for e in of("logged")), 180,
                 "a request with bob's credential", interval=0.5)
        detail(f"first MLflow request as {bob[0]} {time.time() - rotated_at:.1f}s after the write "
               "(to within the 0.5 s this demo polls the pod's log)")
        # Revoke the old credential only once the client is seen using the new one.
        stack.mlflow.delete_user(alice[0])
        detail(f"old user {alice[0]} deleted from MLflow: only the new credential works now")
        before = len(of("logged"))
        wait_for(lambda: len(of("logged")) >= before + 20, 90, "logging with the new credential",
                 interval=1.0)
        final = events()
    except SystemExit:
        detail("last lines of the container's output:\n"
               + "\n".join(json.dumps(e) for e in events()[-20:]))
        raise
    logged = [e for e in final if e.get("event") == "logged"]
    errors = [e for e in final if e.get("event") == "error"]
    status = json.loads(kubectl(stack, "get", "pod", "trainer", "-n", ns, "-o", "json"))["status"]
    restarts = sum(c["restartCount"] for c in status.get("containerStatuses", []))
    code, body = stack.mlflow.get(
        f"/api/2.0/mlflow/metrics/get-history?run_id={started['run_id']}&metric_key=loss")
    stored = {int(m["step"]) for m in body.get("metrics", [])}
    say("Result")
    detail(kubectl(stack, "get", "pods", "-A", "-o", "wide"))
    detail(f"steps logged: {len(logged)} ({sum(e.get('user') == alice[0] for e in logged)} as "
           f"{alice[0]}, {sum(e.get('user') == bob[0] for e in logged)} as {bob[0]}), "
           f"failed calls: {len(errors)}, container restarts: {restarts}")
    for error in errors[:5]:
        detail(f"failed call at step {error['step']}: {error['error']}")
    detail(f"MLflow has {len(stored)} points of `loss` for run {started['run_id']} in experiment "
           f"{experiment} (the pod keeps logging until `make demo-down`)")
    detail(f"MLflow UI: {stack.mlflow.url} (admin credentials: "
           f"`eval \"$({sys.executable} -m dev.stack env)\"`, then $MSA_MLFLOW_BASIC_ADMIN_USERNAME "
           "/ $MSA_MLFLOW_BASIC_ADMIN_PASSWORD)")
    detail("Stop everything: make demo-down")
    ok = (code == 200 and not errors and restarts == 0
          and stored >= {e["step"] for e in logged})
    return 0 if ok else 1


def real_cluster(kubeconfig: str, down: bool) -> int:
    """`KUBECONFIG` given: install the chart with `helm` into that cluster instead of the local stack.

    The image must be pullable by the cluster (`MSA_IMAGE=repo:tag`; see docs/kind.md to build and
    load it into kind). The scenario itself needs a secret manager and MLflow that the cluster
    reaches, so here the demo stops at a verified install and prints the next steps."""
    import os

    from dev.helm import ensure_helm
    from dev.stack.kube import ExistingKube

    helm = str(ensure_helm())
    release, ns = "mlflow-secrets-auth", "mlflow-secrets-auth"
    env = dict(os.environ, KUBECONFIG=kubeconfig)
    if down:
        return subprocess.run([helm, "uninstall", release, "-n", ns], env=env).returncode
    image = os.environ.get("MSA_IMAGE", "")
    sets = []
    if image:
        repository, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
        sets = ["--set", f"image.repository={repository}"] + (["--set", f"image.tag={tag}"] if tag else [])
    say(f"KUBECONFIG={kubeconfig}: installing the chart with helm into that cluster")
    subprocess.run([helm, "upgrade", "--install", release, str(ROOT / "charts" / "mlflow-secrets-auth"),
                    "-n", ns, "--create-namespace", "--wait", "--timeout", "5m", *sets], env=env, check=True)
    kube = ExistingKube(kubeconfig)
    detail(kube.kubectl("get", "deploy,svc,mutatingwebhookconfiguration", "-n", ns).stdout)
    detail(kube.kubectl("get", "crd", CRD_NAME).stdout)
    say("Next: apply a binding (README, docs/providers/) and label a pod "
        "mlflow-secrets-auth/inject=true; `make demo-down` uninstalls the release")
    return 0


def main(argv: list[str] | None = None) -> int:
    import os

    from dev.stack.__main__ import cmd_down, cmd_up

    from dev.stack.__main__ import load_state

    args = sys.argv[1:] if argv is None else argv
    local = load_state().get("components", {}).get("kube", {}).get("info", {}).get("kubeconfig")
    if os.environ.get("KUBECONFIG") and os.environ["KUBECONFIG"] != local:
        return real_cluster(os.environ["KUBECONFIG"], down=args[:1] == ["down"])
    if args[:1] == ["down"]:
        return cmd_down([])
    if args[:1] != ["standin"] and os.geteuid() == 0:
        say("Starting the local stack with a real node: kube-apiserver + etcd + "
            "kube-controller-manager on the node's bridge address, containerd + kubelet + "
            "kube-scheduler + kube-proxy, OpenBao and MLflow with basic auth on the bridge address "
            "(first run builds the images: ~15 min)")
        cmd_up(NODE_COMPONENTS)
        return run_scenario_node()
    if args[:1] != ["standin"]:
        say("Not root: the real node needs root, so the operator and the webhook run as local "
            "processes and dev/kubelet.py runs the pod")
    say("Starting the local stack: kube-apiserver + etcd + kube-controller-manager, OpenBao, "
        "MLflow with basic auth, the operator and the webhook (first run builds and caches them)")
    cmd_up(COMPONENTS)
    return run_scenario()


if __name__ == "__main__":
    sys.exit(main())
