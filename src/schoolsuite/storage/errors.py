"""Errors of the storage layer. Messages are one line, fit for an operator."""

from __future__ import annotations

import uuid


class StoreError(Exception):
    """Base of every storage error."""


class StoreOpenError(StoreError):
    """The store cannot be opened (missing, not writable, wrong key, wrong format)."""


class StoreFullError(StoreError):
    """The LMDB map is full; raise ``[store] map_size``."""


class NotFound(StoreError):
    """A record that must exist does not."""


class Conflict(StoreError):
    """A record that must not exist does (an address taken, a name in use)."""


class CorruptRecord(StoreError):
    """A sealed record failed authentication.

    Carries an incident id that is logged with the record's location, so an
    operator can find it while the client sees only a generic failure.
    """

    def __init__(self, location: str) -> None:
        self.incident = uuid.uuid4().hex[:12]
        self.location = location
        super().__init__(f"sealed record failed authentication (incident {self.incident})")
