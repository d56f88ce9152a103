"""The soak's report: one table of figures, each with the rule it must meet, and the check of the
hard rules (``violations``) that ``make soak`` and the 5-minute test fail on."""
from __future__ import annotations


def violations(report: dict) -> list[str]:
    """Every hard rule the run broke (empty: the run passed)."""
    out = []
    for kind, names in report["secrets"].items():
        if names:
            out.append(f"Secrets {kind}: {names}")
    if report["labelled_pods_not_injected"]:
        out.append(f"labelled pods not injected: {report['labelled_pods_not_injected']}")
    refused = report["burst"].get("refused") or {}
    if refused:
        out.append(f"pods refused: {refused}")
    if report["burst"].get("not_running_after_300s"):
        out.append(f"burst pods not Running after 300 s: "
                   f"{len(report['burst']['not_running_after_300s'])}")
    if report["unexpected_failures"]:
        out.append(f"{len(report['unexpected_failures'])} failed or missing requests outside the "
                   f"declared expected failures, e.g. {report['unexpected_failures'][:3]}")
    for pod, state in report["client_pods"].items():
        if state["phase"] != "Running" or state["restarts"] or not state["injected"]:
            out.append(f"client pod {pod}: {state}")
    if report["secret_values_in_logs"]:
        out.append(f"{report['secret_values_in_logs']} secret values in pod logs")
    if report.get("leftovers"):
        out.append(f"left on the host after teardown: {report['leftovers']}")
    failed_rotations = [e["text"] for e in report["events"] if e["kind"] == "rotate-failed"]
    if failed_rotations:
        out.append(f"rotations that could not be written: {failed_rotations}")
    errors = [f for f in report["faults"] if f["kind"] == "fault-error"]
    if errors:
        out.append(f"faults that could not be injected: {[f['text'] for f in errors]}")
    return out


def table(report: dict) -> str:
    r, b, lat = report["requests"], report["burst"], report["rotation_latency_s"]
    rows = [
        ("figure", "value", "rule"),
        ("requests sent (client rounds: a metric; every 20th also a param, every 30th an artifact and a trace)", r["sent"], "-"),
        ("requests failed", f"{r['failed']} {r['failed_by_reason'] or ''}",
         "0: no outage outlasts a live credential; none is declared expected"),
        ("Secrets lost / emptied / orphaned / duplicated",
         " / ".join(str(len(report["secrets"][k])) for k in
                    ("lost", "emptied", "orphaned", "duplicated")),
         f"0 / 0 / 0 / 0 (over {report['secret_samples']} samples)"),
        ("labelled pods not injected", len(report["labelled_pods_not_injected"]), "0"),
        ("pods refused (why)", b.get("refused") or 0, "0"),
        ("burst: pods, created, Running", f"{b.get('pods')}, {b.get('created')}, "
         f"{(b.get('pods') or 0) - len(b.get('not_running_after_300s') or [])} after "
         f"{b.get('all_running_seconds')} s", "all, within 300 s"),
        ("admission (create round trip) p50 / p99 in the burst",
         f"{b.get('admission_p50_ms')} / {b.get('admission_p99_ms')} ms", "figure"),
        ("rotation latency write -> first request, p50 / max",
         f"{lat['p50']} / {lat['max']} s ({lat['count']} rotations)",
         f"every rotation in use before the old credential is revoked "
         f"({report['scale']['overlap']:.0f} s)"),
        ("client pods Running, 0 restarts",
         sum(1 for s in report["client_pods"].values()
             if s["phase"] == "Running" and not s["restarts"]),
         f"all {len(report['client_pods'])}"),
        ("secret values in logs", report["secret_values_in_logs"], "0"),
        ("left on the host after teardown", len(report.get("leftovers") or []), "0"),
    ]
    for name, rss in sorted(report["rss"].items()):
        rows.append((f"RSS {name} first / max / last", f"{rss['first_mib']} / {rss['max_mib']} / "
                     f"{rss['last_mib']} MiB", "flat: no growth across the run (read, not "
                     "asserted: a restarted container starts over)"))
    width = [max(len(str(row[i])) for row in rows) for i in range(3)]
    lines = [" | ".join(str(c).ljust(width[i]) for i, c in enumerate(row)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in width))
    faults = [f"  {f.get('began', f['at']):>6} - {f['at']:>6} s  {f['text']}"
              for f in report["faults"]]
    if report.get("chart_pod_restarts"):
        faults.append("chart pod restarts (the kill -9 faults): "
                      + ", ".join(f"{k} {v}" for k, v in report["chart_pod_restarts"].items()))
    return "\n".join(lines + ["", "faults (seconds from the start):"] + faults)
