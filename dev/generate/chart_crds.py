"""Copy the CRDs from crds/ (their one source) into the chart.

    python dev/generate/chart_crds.py           # write charts/mlflow-secrets-auth/files/crds/
    python dev/generate/chart_crds.py --check   # exit 1 and name the files that drifted

The chart's templates/crds.yaml reads these copies, adds the chart's labels and, with
`crds.keep`, the `helm.sh/resource-policy: keep` annotation. The copies are byte-for-byte
identical to crds/; tests/unit/chart/test_chart_crds.py fails when they drift.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "crds"
TARGET = ROOT / "charts" / "mlflow-secrets-auth" / "files" / "crds"
HEADER = "# Generated from crds/{name} by dev/generate/chart_crds.py: edit the source, not this copy.\n"


def expected(source: Path = SOURCE) -> dict[str, str]:
    """File name -> the content its chart copy must have."""
    return {p.name: HEADER.format(name=p.name) + p.read_text()
            for p in sorted(source.glob("*.yaml"))}


def drift(source: Path = SOURCE, target: Path = TARGET) -> list[str]:
    """Names of chart copies that are missing, stale, or have no source any more."""
    want = expected(source)
    have = {p.name: p.read_text() for p in sorted(target.glob("*.yaml"))} if target.is_dir() else {}
    return sorted(n for n in set(want) | set(have) if want.get(n) != have.get(n))


def write(source: Path = SOURCE, target: Path = TARGET) -> list[str]:
    changed = drift(source, target)
    target.mkdir(parents=True, exist_ok=True)
    want = expected(source)
    for name in changed:
        if name in want:
            (target / name).write_text(want[name])
        else:
            (target / name).unlink()
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report drift")
    args = parser.parse_args(argv)
    if args.check:
        stale = drift()
        if stale:
            print("chart CRDs differ from crds/: " + ", ".join(stale)
                  + "; run `python dev/generate/chart_crds.py`", file=sys.stderr)
            return 1
        return 0
    for name in write():
        print(f"updated {TARGET.relative_to(ROOT) / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
