"""CalDAV and CardDAV: Radicale embedded as WSGI under ``/dav/`` on the sealed store.

Importing this module registers the ``/dav/`` mount (``server.HTTP_MOUNTS``)
and the default calendar and address book of new accounts
(``ACCOUNT_INITIALIZERS``). See app.py for the assembly, plugin_storage.py
for the storage plugin, wsgi.py for what sits between Twisted and Radicale.
"""

from __future__ import annotations

from typing import Any

from ... import server
from ...services.accounts import ACCOUNT_INITIALIZERS
from ...storage.dav import init_account


def _build(ctx: Any) -> Any:
    from .app import build_resource

    return build_resource(ctx)


server.HTTP_MOUNTS[b"dav"] = _build
if init_account not in ACCOUNT_INITIALIZERS:
    ACCOUNT_INITIALIZERS.append(init_account)
