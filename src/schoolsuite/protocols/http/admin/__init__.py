"""The provisioning API for the school portal: SCIM 2.0 under ``/admin/scim/v2/`` (RFC 7643, 7644).

Importing this module registers ``/admin/`` on the HTTPS listener
(``server.HTTP_MOUNTS[b"admin"]``). Layout: grammar.py (filters and PATCH
paths), resources.py (User/Group JSON ⇄ specs, PATCH), discovery.py
(ServiceProviderConfig, Schemas, ResourceTypes), ops.py (one function per
resource), resource.py (Twisted: tokens, JSON, error replies).
"""

from __future__ import annotations

from typing import Any

from .... import server
from ....services.admin_tokens import AdminTokens
from ....services.groups import GroupService
from ....services.provisioning import ProvisioningService
from ..autoconfig import public_url
from .ops import Scim
from .resource import AdminResource


def build(ctx: Any) -> AdminResource:
    """The ``/admin/`` resource for one server."""
    services = ctx.services
    groups = services.groups or GroupService(ctx.store)
    scim = Scim(
        provisioning=ProvisioningService(ctx.store, services.accounts, groups),
        groups=groups,
        writer=services.writer,
        reactor=ctx.reactor,
        base=public_url(ctx.config, "/admin/scim/v2"),
        domain=ctx.config.instance.domain,
    )
    return AdminResource(scim, AdminTokens(ctx.store))


server.HTTP_MOUNTS[b"admin"] = build
