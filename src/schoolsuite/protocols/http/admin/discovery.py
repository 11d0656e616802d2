"""SCIM discovery documents (RFC 7644 §4): ServiceProviderConfig, ResourceTypes, Schemas.

Static data describing exactly what resources.py accepts.
"""

from __future__ import annotations

from typing import Any

from .resources import GROUP, GROUP_EXT, USER, USER_EXT

SPC = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
RESOURCE_TYPE = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Schema"
MAX_RESULTS = 1000
MAX_BODY = 1 << 20


def service_provider_config(base: str) -> dict[str, Any]:
    """RFC 7643 §5."""
    return {
        "schemas": [SPC],
        "patch": {"supported": True},
        "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": True, "maxResults": MAX_RESULTS},
        "changePassword": {"supported": True},
        "sort": {"supported": False},
        "etag": {"supported": True},
        "authenticationSchemes": [{
            "type": "oauthbearertoken", "name": "Bearer token", "primary": True,
            "description": "A token made with 'schoolsuite admin-token add LABEL', sent as "
                           "'Authorization: Bearer TOKEN'.",
        }],
        "meta": {"resourceType": "ServiceProviderConfig", "location": f"{base}/ServiceProviderConfig"},
    }


def resource_types(base: str) -> list[dict[str, Any]]:
    """RFC 7643 §6."""
    return [
        {"schemas": [RESOURCE_TYPE], "id": "User", "name": "User", "endpoint": "/Users",
         "description": "A teacher's account", "schema": USER,
         "schemaExtensions": [{"schema": USER_EXT, "required": False}],
         "meta": {"resourceType": "ResourceType", "location": f"{base}/ResourceTypes/User"}},
        {"schemas": [RESOURCE_TYPE], "id": "Group", "name": "Group", "endpoint": "/Groups",
         "description": "A mailing list with a shared address book of its members", "schema": GROUP,
         "schemaExtensions": [{"schema": GROUP_EXT, "required": False}],
         "meta": {"resourceType": "ResourceType", "location": f"{base}/ResourceTypes/Group"}},
    ]


def _attr(name: str, kind: str = "string", *, required: bool = False, multi: bool = False,
          mutability: str = "readWrite", returned: str = "default", uniqueness: str = "none",
          description: str = "", subs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    attr = {"name": name, "type": kind, "multiValued": multi, "description": description, "required": required,
            "caseExact": False, "mutability": mutability, "returned": returned, "uniqueness": uniqueness}
    if subs:
        attr["subAttributes"] = subs
    return attr


def schemas(base: str) -> list[dict[str, Any]]:
    """RFC 7643 §7: the attributes we accept (anything else is refused)."""
    email_subs = [_attr("value", description="A mail address; all but userName are aliases"),
                  _attr("type"), _attr("primary", "boolean"), _attr("display")]
    member_subs = [_attr("value", required=True, mutability="immutable", description="A User id"),
                   _attr("display", mutability="readOnly"), _attr("type", mutability="immutable"),
                   _attr("$ref", "reference", mutability="immutable")]
    docs = [
        (USER, "User", "A teacher's account", [
            _attr("userName", required=True, uniqueness="server",
                  description="The primary mail address; renaming keeps the old one as an alias"),
            _attr("name", "complex", subs=[_attr("givenName"), _attr("familyName"), _attr("formatted")]),
            _attr("displayName"),
            _attr("active", "boolean", description="false refuses every login and closes open sessions; "
                                                   "data and mail delivery stay"),
            _attr("password", mutability="writeOnly", returned="never"),
            _attr("emails", "complex", multi=True, subs=email_subs),
        ]),
        (USER_EXT, "schoolsuite User", "Storage quota", [
            _attr("quota", "integer", description="Storage quota in bytes (absent: none)")]),
        (GROUP, "Group", "A mailing list and a shared address book", [
            _attr("displayName", required=True),
            _attr("members", "complex", multi=True, subs=member_subs),
        ]),
        (GROUP_EXT, "schoolsuite Group", "The group's list address", [
            _attr("address", uniqueness="server",
                  description="Mailing-list address (default: displayName as a slug at the mail domain)")]),
    ]
    return [{"schemas": [SCHEMA], "id": urn, "name": name, "description": text, "attributes": attrs,
             "meta": {"resourceType": "Schema", "location": f"{base}/Schemas/{urn}"}}
            for urn, name, text, attrs in docs]
