"""The one exception a sync raises for a failure the binding's owner can act on."""
from __future__ import annotations


class SyncError(Exception):
    """A sync failed for a reason the binding's owner can act on (never contains a secret)."""

    def __init__(self, reason: str, message: str, transient: bool = False):
        super().__init__(message)
        self.reason, self.message, self.transient = reason, message, transient
