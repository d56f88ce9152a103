"""``python -m bench.soak --seed 7 --duration 300 [--full] [--out FILE]`` (as root: the local node).

Starts the control plane and the node (``dev.stack.node``; waits for the machine's node slot),
runs the soak (``harness.Soak``), tears everything down, lists what is left on the host, prints the
table and writes the JSON report. Exit status 1 when a rule is broken (``report.violations``).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.soak.harness import CI, FULL, Soak
from bench.soak.report import table, violations
from dev.stack.node import LocalNode, NodeKube, cleanup_host, leftovers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load and faults")
    parser.add_argument("--full", action="store_true",
                        help="10 namespaces, 50 bindings, 20 client pods, a 150-pod burst "
                             "(default: 3 namespaces, 9 bindings, 6 client pods, 30-pod burst)")
    parser.add_argument("--out", type=Path, default=None, help="JSON report (default: bench/soak/"
                                                               "results/soak-SEED-DURATION.json)")
    args = parser.parse_args(argv)
    out = args.out or Path("bench/soak/results") / f"soak-{args.seed}-{int(args.duration)}.json"
    before = leftovers()
    if before:
        print("the host has leftovers of an earlier node; `python -m dev.stack.node cleanup "
              "<run dir>/node` first:\n" + "\n".join(before), file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="msa-soak-"))
    kube = NodeKube()
    node = LocalNode(kube)
    node.ensure_installed()
    started = time.time()
    report: dict = {}
    soak = None
    try:
        kube.start(base / "kube")
        node.start(base / "node")
        soak = Soak(node, base, args.seed, args.duration, FULL if args.full else CI)
        try:
            report = soak.run()
        finally:
            soak.teardown()
    finally:
        node.stop()
        kube.stop()
        cleanup_host(base / "node", node.netns)
    report["leftovers"] = leftovers(base / "node", node.netns)
    report["wall_clock_s"] = round(time.time() - started, 1)
    report["command"] = "python -m bench.soak " + " ".join(argv if argv is not None
                                                            else sys.argv[1:])
    with open("/proc/loadavg") as f:
        report["loadavg_at_end"] = f.read().split()[:3]
    broken = violations(report)
    report["violations"] = broken
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    print(table(report))
    print(f"\nJSON: {out}")
    print("rules: " + ("all met" if not broken else "BROKEN:\n  " + "\n  ".join(broken)))
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
