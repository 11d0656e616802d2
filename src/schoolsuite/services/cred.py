"""twisted.cred glue: a checker on the authentication service and a realm.

Protocols build a :class:`ClientCredentials` (which also says where the
client is and which protocol it speaks, for throttling and logs) and ask a
``Portal(realm, [checker])`` for an avatar. The realm hands out the
avatar that a protocol registered for its interface; the avatar id is the
:class:`~schoolsuite.services.auth.Principal`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.cred import error
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from zope.interface import Interface, implementer

from .auth import AuthFailed, AuthService, Principal


@implementer(IUsernamePassword)
class ClientCredentials:
    """A user name and secret, with the client's address and protocol."""

    def __init__(self, username: str, password: str, client_address: str | None, protocol: str) -> None:
        self.username = username
        self.password = password
        self.client_address = client_address
        self.protocol = protocol

    def checkPassword(self, password: bytes | str) -> bool:  # noqa: N802 (Twisted's name)
        raise NotImplementedError("checked by SchoolsuiteChecker, never in memory")

    def __repr__(self) -> str:
        return f"ClientCredentials(username={self.username!r}, password=<hidden>, protocol={self.protocol!r})"


class LoginRefused(error.UnauthorizedLogin):
    """UnauthorizedLogin carrying the service's reason (failed, blocked, disabled, ...)."""

    def __init__(self, reason: str, retry_after: float = 0.0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@implementer(ICredentialsChecker)
class SchoolsuiteChecker:
    """Checks :class:`ClientCredentials` (or any IUsernamePassword) with the auth service."""

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, auth: AuthService) -> None:
        self._auth = auth

    def requestAvatarId(self, credentials: Any) -> defer.Deferred[Principal]:  # noqa: N802
        username = _text(credentials.username)
        password = _text(credentials.password)
        client = getattr(credentials, "client_address", None)
        protocol = getattr(credentials, "protocol", "unknown")
        d = self._auth.authenticate(username, password, client, protocol)

        def refused(failure: Any) -> None:
            failure.trap(AuthFailed)
            raise LoginRefused(failure.value.reason, failure.value.retry_after)

        return d.addErrback(refused)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


class IAccount(Interface):
    """The logged-in user: a Principal (the avatar when a protocol asks for nothing else)."""


@implementer(IRealm)
class SchoolsuiteRealm:
    """Builds each protocol's avatar for a logged-in Principal."""

    def __init__(self) -> None:
        self._factories: dict[Any, Callable[[Principal, Any], Any]] = {IAccount: lambda p, mind: p}

    def register(self, interface: Any, factory: Callable[[Principal, Any], Any]) -> None:
        """Say how to build the avatar for ``interface`` (done by each protocol)."""
        self._factories[interface] = factory

    def requestAvatar(self, avatarId: Principal, mind: Any, *interfaces: Any):  # noqa: N802,N803
        for interface in interfaces:
            factory = self._factories.get(interface)
            if factory is not None:
                avatar = factory(avatarId, mind)
                return interface, avatar, getattr(avatar, "logout", lambda: None)
        raise NotImplementedError("no avatar for these interfaces")


def make_portal(auth: AuthService, realm: SchoolsuiteRealm) -> Portal:
    return Portal(realm, [SchoolsuiteChecker(auth)])
