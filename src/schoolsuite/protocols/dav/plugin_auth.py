"""Radicale auth and rights plugins on schoolsuite's authentication service.

Auth: Radicale calls ``login`` synchronously on a WSGI thread; the check runs
in :class:`~schoolsuite.services.auth.AuthService` on the reactor (throttling,
app passwords, argon2id off the reactor, constant time) and this thread waits
for it. The user Radicale sees is the normalised address, which is also the
name of the home (``/dav/ADDRESS/``).

Rights (Radicale's letters): ``R``/``W`` read/write plain collections, ``r``/``w``
read/write calendars and address books. A user reaches only their own home;
the root is readable (it answers current-user-principal); generated
collections in the home (the school directory, group books) are read-only.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from radicale import auth, pathutils, rights
from twisted.internet import threads

from ...services.auth import AuthFailed


class Auth(auth.BaseAuth):
    """Checks Basic credentials with the shared authentication service."""

    def __init__(self, configuration: Any, services: Any) -> None:
        super().__init__(configuration)
        self._services = services
        self._reactor = services.reactor
        self.on_login: Callable[[Any], None] = lambda principal: None

    def _login_ext(self, login: str, password: str, context: auth.AuthContext) -> str:
        try:
            principal = threads.blockingCallFromThread(
                self._reactor, self._services.auth.authenticate, login, password,
                context.remote_addr, "dav")
        except AuthFailed:
            return ""
        self.on_login(principal)
        return principal.address

    def _sleep_for_constant_exec_time(self, time_ns_begin: int) -> None:
        """The authentication service already answers failures in constant time."""


class Rights(rights.BaseRights):
    """Own home only; generated collections read-only."""

    def __init__(self, configuration: Any, read_only_names: Collection[str] = (),
                 read_only_prefixes: Collection[str] = ()) -> None:
        super().__init__(configuration)
        self._read_only = frozenset(read_only_names)
        self._read_only_prefixes = tuple(read_only_prefixes)

    def authorization(self, user: str, user_groups: set[str], path: str) -> str:
        if not user:
            return ""
        sane = pathutils.strip_path(path)
        if not sane:
            return "R"  # the root: PROPFIND for current-user-principal
        parts = sane.split("/")
        if parts[0] != user:
            return ""
        if len(parts) == 1:
            return "RWD"  # the home: create collections in it; "D" on it refuses deleting it
        if len(parts) == 2:
            read_only = parts[1] in self._read_only or parts[1].startswith(self._read_only_prefixes)
            return "r" if read_only else "rw"
        return ""
