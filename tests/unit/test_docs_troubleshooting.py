"""docs/troubleshooting.md names every condition reason the operator can set."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "troubleshooting.md").read_text()
SOURCES = [*(ROOT / "operator").rglob("*.py"), *(ROOT / "providers").rglob("*.py")]

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


# Phrases troubleshooting.md quotes from the webhook's denials and warnings and from the plugin's
# log lines: each must still be in the code (a reworded message needs its row updated).
QUOTED = {
    "webhook": ["has no MlflowAuthBinding", "but the namespace has no binding of that name",
                "choose one with the pod annotation", "has not written its credential",
                "does not allow (spec.allowedServiceAccounts", "could not be read",
                "already defines volume", "already has an init container named",
                "already mounts something at", "could not list MlflowAuthBindings",
                "the pod could not be read", "is not Ready",
                "request.object is missing: nothing to admit", "the request names no namespace",
                "from valueFrom, so the webhook cannot know where to mount the credential",
                "to an empty value", "which is not a normalized absolute path other than /",
                "which the kubelet would expand", "which collides with the plugin's mount at"],
    "plugin/mlflow_secrets_auth": ["host not allowed", "following a redirect to",
                                   "the credential directory", "has no credential: expected",
                                   "and has not been rotated", "has since rotated; re-sent once",
                                   "keeping the last good one",
                                   "following a redirect from https to http",
                                   "ignoring the allowed-host pattern",
                                   "refusing the credential: the header name",
                                   "frames, routes or manages the request",
                                   "is not a valid HTTP header name",
                                   "header is empty or contains a control character"],
}


def test_every_quoted_denial_and_log_line_still_exists_in_the_code():
    stale = []
    for package, phrases in QUOTED.items():
        source = "\n".join(p.read_text() for p in (ROOT / package).rglob("*.py"))
        source = re.sub(r"\"\s*\n\s*f?\"", "", source)  # join implicitly concatenated literals
        for phrase in phrases:
            assert phrase.split(" (")[0].split(":")[0] in PAGE, f"{phrase!r} is not in the page"
            if phrase not in source:
                stale.append(f"{package}: {phrase!r}")
    assert stale == [], "reworded in the code: update docs/troubleshooting.md and this list"
