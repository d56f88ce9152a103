"""docs/troubleshooting.md names every condition reason the operator can set."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "troubleshooting.md").read_text()
SOURCES = [*(ROOT / "operator").rglob("*.py"), *(ROOT / "plugin" / "mlflow_secrets_auth" / "providers").rglob("*.py")]

# Where a reason is born: `reason = "X"` on an error class, SyncError("X", ...),
# Outcome.failure("X", ...), FailureDecision(..., "X", ...), and CamelCase module constants.
_PATTERNS = [
    r"\breason\s*=\s*\"([A-Z][A-Za-z]+)\"",
    r"SyncError\(\s*\"([A-Z][A-Za-z]+)\"",
    r"failure\(\s*\"([A-Z][A-Za-z]+)\"",
    r"FailureDecision\(\s*\w+,\s*\"([A-Z][A-Za-z]+)\"",
    r"^SYNCED\s*=\s*\"([A-Z][A-Za-z]+)\"",
    r"^[A-Z][A-Z_]*\s*=\s*\"([A-Z][a-z]+(?:[A-Z][a-z]+)+)\"\s*$",   # e.g. HOLDING = "TokenRefreshRetrying"
]


def _reasons() -> set:
    found = set()
    for path in SOURCES:
        text = path.read_text()
        for pattern in _PATTERNS:
            found.update(re.findall(pattern, text, flags=re.M))
    return found


def test_the_reason_scan_finds_the_operators_reasons():
    reasons = _reasons()
    assert {"Synced", "SecretRefNotFound", "AuthenticationFailed"} <= reasons, reasons


def test_every_condition_reason_has_a_row_in_troubleshooting():
    missing = sorted(r for r in _reasons() if f"| `{r}` |" not in PAGE)
    assert missing == [], "add a row (meaning, fix) to docs/troubleshooting.md for each"


def test_every_event_reason_the_operator_posts_is_explained():
    events = set()
    for path in SOURCES:
        events.update(re.findall(r"post_event\([^,]+,\s*\"(?:Normal|Warning)\",\s*\"([A-Z][A-Za-z]+)\"",
                                 path.read_text()))
    assert all(f"`{e}`" in PAGE for e in events), events
