"""SCIM User and Group resources (RFC 7643 §4): JSON ⇄ provisioning specs, and PATCH.

Pure: no I/O. :func:`user_spec` validates a request body (unknown attributes
and wrong types are refused, RFC 7644 §3.12 ``invalidSyntax``/``invalidValue``),
:func:`render_user` writes the resource, :func:`apply_patch` applies PATCH
operations to a resource's JSON in memory so that a request that fails
half-way has changed nothing.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import re
from typing import Any

from ....services.accounts import AccountError, normalize_address
from ....services.groups import GroupInfo
from ....services.provisioning import GroupSpec, UserRecord, UserSpec
from . import grammar
from .errors import ScimError, invalid
from .grammar import Path, lookup

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
USER_EXT = "urn:schoolsuite:params:scim:schemas:extension:2.0:User"
GROUP_EXT = "urn:schoolsuite:params:scim:schemas:extension:2.0:Group"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
MAX_OPERATIONS = 1000

# Attribute name → (type, multi-valued, sub-attributes) of what we accept (RFC 7643 §4.1, §4.2).
_NAME_SUBS = {"givenName": str, "familyName": str, "formatted": str}
_EMAIL_SUBS = {"value": str, "type": str, "primary": bool, "display": str}
_MEMBER_SUBS = {"value": str, "display": str, "type": str, "$ref": str}
USER_ATTRS: dict[str, Any] = {
    "schemas": list, "id": str, "externalId": str, "meta": dict, "userName": str, "displayName": str,
    "active": bool, "password": str, "name": _NAME_SUBS, "emails": [_EMAIL_SUBS], USER_EXT: {"quota": int},
}
GROUP_ATTRS: dict[str, Any] = {
    "schemas": list, "id": str, "externalId": str, "meta": dict, "displayName": str,
    "members": [_MEMBER_SUBS], GROUP_EXT: {"address": str},
}


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def etag(doc: dict[str, Any]) -> str:
    """A weak ETag over everything the resource says (RFC 7644 §3.14)."""
    digest = hashlib.sha256(json.dumps({k: v for k, v in doc.items() if k != "meta"}, sort_keys=True)
                            .encode()).hexdigest()[:20]
    return f'W/"{digest}"'


def _finish(doc: dict[str, Any]) -> dict[str, Any]:
    doc["meta"]["version"] = etag(doc)
    return doc


# -- canonical spelling and type checks -------------------------------------------


def _canonical_key(schema: dict[str, Any], key: str) -> str | None:
    folded = key.lower()
    for name in schema:
        if name.lower() == folded:
            return name
    return None


def canonicalize(body: Any, schema: dict[str, Any], where: str = "") -> dict[str, Any]:
    """Fold attribute names to the schema's spelling, check types; refuse unknown attributes."""
    if not isinstance(body, dict):
        raise invalid(f"{where or 'the body'} must be a JSON object", "invalidSyntax")
    out: dict[str, Any] = {}
    for key, value in body.items():
        name = _canonical_key(schema, key)
        if name is None:
            raise invalid(f"unknown attribute {where + key!r}", "invalidSyntax")
        out[name] = _check(schema[name], value, where + name)
    return out


def _check(kind: Any, value: Any, where: str) -> Any:
    if value is None:
        return None
    if isinstance(kind, list):
        if not isinstance(value, list):
            raise invalid(f"{where} must be a list", "invalidSyntax")
        return [canonicalize(v, kind[0], where + ".") for v in value]
    if isinstance(kind, dict):
        return canonicalize(value, kind, where + ".")
    if kind is bool and isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"  # Azure AD sends "False" in PATCH; RFC 7643 §2.3.2 wants JSON booleans
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise invalid(f"{where} must be an integer", "invalidValue")
    if kind is not int and not isinstance(value, kind):
        raise invalid(f"{where} must be a {kind.__name__}", "invalidValue")
    return value


def _schemas(body: dict[str, Any], core: str, allowed: tuple[str, ...]) -> None:
    schemas = body.get("schemas")
    if not isinstance(schemas, list) or core not in schemas:
        raise invalid(f"schemas must list {core}", "invalidSyntax")
    for urn in schemas:
        if urn not in allowed:
            raise invalid(f"unknown schema {urn!r}", "invalidSyntax")


def _address(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise invalid(f"{what} is required")
    try:
        return normalize_address(value)
    except AccountError as exc:
        raise invalid(f"{what}: {exc}") from None


# -- users ------------------------------------------------------------------------


def user_spec(body: Any) -> tuple[UserSpec, str | None]:
    """A validated User body → (spec, password or None)."""
    doc = canonicalize(body, USER_ATTRS)
    _schemas(doc, USER, (USER, USER_EXT))
    address = _address(doc.get("userName"), "userName")
    aliases: list[str] = []
    for email in doc.get("emails") or []:
        value = _address(email.get("value"), "emails.value")
        if value != address and value not in aliases:
            aliases.append(value)
    name = doc.get("name") or {}
    display = doc.get("displayName") or name.get("formatted") or " ".join(
        filter(None, [name.get("givenName"), name.get("familyName")]))
    quota = (doc.get(USER_EXT) or {}).get("quota")
    if quota is not None and quota <= 0:
        raise invalid("quota must be a positive number of bytes")
    active = doc.get("active")
    password = doc.get("password")
    if password is not None and not password:
        raise invalid("password is empty")
    spec = UserSpec(
        address=address, display_name=(display or "")[:256], given_name=(name.get("givenName") or "")[:256],
        family_name=(name.get("familyName") or "")[:256], external_id=(doc.get("externalId") or "")[:256],
        active=True if active is None else active, aliases=tuple(aliases), quota=quota)
    return spec, password


def render_user(record: UserRecord, base: str) -> dict[str, Any]:
    """The User resource (RFC 7643 §4.1); the password is never returned."""
    account, facts = record.account, record.facts
    emails = [{"value": account.address, "type": "work", "primary": True}]
    emails += [{"value": alias, "type": "other"} for alias in account.aliases]
    doc: dict[str, Any] = {
        "schemas": [USER, USER_EXT] if account.quota is not None else [USER],
        "id": account.id.hex(),
        "userName": account.address,
        "name": {k: v for k, v in (("givenName", facts.given_name), ("familyName", facts.family_name),
                                   ("formatted", account.name)) if v},
        "displayName": account.name,
        "active": account.active,
        "emails": emails,
        "meta": {"resourceType": "User", "created": _iso(facts.created or account.created),
                 "lastModified": _iso(facts.modified or account.created), "location": f"{base}/Users/{account.id.hex()}"},
    }
    if facts.external_id:
        doc["externalId"] = facts.external_id
    if account.quota is not None:
        doc[USER_EXT] = {"quota": account.quota}
    return _finish(doc)


# -- groups -----------------------------------------------------------------------


def _slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:64].strip("-") or "group"


def group_spec(body: Any, domain: str) -> GroupSpec:
    """A validated Group body; the list address comes from our extension, else from displayName."""
    doc = canonicalize(body, GROUP_ATTRS)
    _schemas(doc, GROUP, (GROUP, GROUP_EXT))
    display = doc.get("displayName")
    if not isinstance(display, str) or not display.strip():
        raise invalid("displayName is required")
    given = (doc.get(GROUP_EXT) or {}).get("address")
    address = _address(given, "address") if given else _address(f"{_slug(display)}@{domain}", "displayName")
    members = []
    for member in doc.get("members") or []:
        value = member.get("value")
        if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{32}", value):
            raise invalid(f"members.value {value!r} is not a User id")
        members.append(bytes.fromhex(value))
    return GroupSpec(address=address, display_name=display.strip()[:256],
                     external_id=(doc.get("externalId") or "")[:256], members=tuple(dict.fromkeys(members)))


def render_group(info: GroupInfo, base: str, names: dict[bytes, str]) -> dict[str, Any]:
    """The Group resource (RFC 7643 §4.2) with our list-address extension."""
    doc: dict[str, Any] = {
        "schemas": [GROUP, GROUP_EXT],
        "id": info.id.hex(),
        "displayName": info.name,
        "members": [{"value": m.hex(), "$ref": f"{base}/Users/{m.hex()}", "type": "User",
                     **({"display": names[m]} if m in names else {})} for m in info.members],
        GROUP_EXT: {"address": info.address},
        "meta": {"resourceType": "Group", "created": _iso(info.created), "lastModified": _iso(info.modified),
                 "location": f"{base}/Groups/{info.id.hex()}"},
    }
    if info.external_id:
        doc["externalId"] = info.external_id
    return _finish(doc)


# -- PATCH (RFC 7644 §3.5.2) ---------------------------------------------------------


def parse_patch(body: Any) -> list[tuple[str, Path | None, Any]]:
    """The operations of a PatchOp body: (op, path or None, value)."""
    if not isinstance(body, dict):
        raise invalid("the body must be a JSON object", "invalidSyntax")
    schemas = lookup(body, "schemas")
    if not isinstance(schemas, list) or PATCH_OP not in schemas:
        raise invalid(f"schemas must list {PATCH_OP}", "invalidSyntax")
    ops = lookup(body, "Operations")
    if not isinstance(ops, list) or not ops:
        raise invalid("Operations must be a non-empty list", "invalidSyntax")
    if len(ops) > MAX_OPERATIONS:
        raise ScimError(400, f"at most {MAX_OPERATIONS} operations", "tooMany")
    out = []
    for op in ops:
        if not isinstance(op, dict):
            raise invalid("each operation is an object", "invalidSyntax")
        name = str(lookup(op, "op") or "").lower()  # some portals send "Replace"
        if name not in ("add", "replace", "remove"):
            raise invalid(f"unknown op {lookup(op, 'op')!r}", "invalidSyntax")
        path_text = lookup(op, "path")
        path = grammar.parse_path(path_text) if isinstance(path_text, str) and path_text else None
        value = lookup(op, "value")
        if name == "remove" and path is None:
            raise ScimError(400, "remove needs a path", "noTarget")
        if name != "remove" and value is None:
            raise invalid(f"{name} needs a value")
        out.append((name, path, value))
    return out


def _target(doc: dict[str, Any], path: Path, schema: dict[str, Any], core: str) -> tuple[dict[str, Any], str]:
    """The object holding the path's attribute, and the attribute's canonical name."""
    attr = path.attr
    holder = doc
    if attr.urn and attr.urn.lower() != core.lower():
        urn = _canonical_key(schema, attr.urn)
        if urn is None:
            raise ScimError(400, f"unknown schema {attr.urn!r}", "invalidPath")
        holder = doc.setdefault(urn, {})
        schema = schema[urn]
    name = _canonical_key(schema, attr.attr)
    if name is None or name in ("id", "meta", "schemas"):
        raise ScimError(400, f"cannot change {attr.attr!r}", "invalidPath" if name is None else "mutability")
    if attr.sub:
        if not isinstance(schema[name], dict):
            raise ScimError(400, f"{attr.attr!r} has no sub-attributes", "invalidPath")
        holder = holder.setdefault(name, {})
        sub = _canonical_key(schema[name], attr.sub)
        if sub is None:
            raise ScimError(400, f"unknown attribute {attr.attr}.{attr.sub}", "invalidPath")
        return holder, sub
    return holder, name


def apply_patch(doc: dict[str, Any], ops: list[tuple[str, Path | None, Any]], schema: dict[str, Any],
                core: str) -> dict[str, Any]:
    """A new resource JSON with the operations applied in order (``doc`` is not changed)."""
    doc = copy.deepcopy(doc)
    doc.pop("meta", None)
    for op, path, value in ops:
        doc = canonicalize(doc, schema)  # every operation starts from a well-typed resource
        if path is None:  # RFC 7644 §3.5.2.1/.3: the value holds the attributes to set
            for key, item in canonicalize(value, schema).items():
                if op == "add" and isinstance(item, list) and isinstance(doc.get(key), list):
                    doc[key] = doc[key] + [v for v in item if v not in doc[key]]
                elif isinstance(item, dict) and isinstance(doc.get(key), dict):
                    doc[key] = {**doc[key], **item}
                else:
                    doc[key] = item
            continue
        holder, name = _target(doc, path, schema, core)
        kind = schema.get(name) if holder is doc else None
        if path.value_filter is None:
            if op == "remove" and isinstance(kind, list) and value is not None:
                # Azure AD style: remove the listed values only ({"value": id} entries).
                gone = {lookup(v, "value") if isinstance(v, dict) else v
                        for v in (value if isinstance(value, list) else [value])}
                holder[name] = [e for e in holder.get(name) or []
                                if not (isinstance(e, dict) and lookup(e, "value") in gone)]
            elif op == "remove":
                holder.pop(name, None)
            elif op == "add" and isinstance(kind, list):
                items = value if isinstance(value, list) else [value]
                current = holder.get(name) or []
                holder[name] = current + [v for v in items if v not in current]
            else:
                holder[name] = value
            continue
        # attr[filter] or attr[filter].sub: act on the matching elements (RFC 7644 §3.5.2.2, .3).
        elements = holder.get(name) or []
        if not isinstance(elements, list):
            raise ScimError(400, f"{name} is not multi-valued", "invalidPath")
        matching = [e for e in elements if isinstance(e, dict) and grammar.evaluate(path.value_filter, e)]
        if op == "remove":
            if path.sub:
                for element in matching:
                    element.pop(_canonical_key(kind[0], path.sub) or path.sub, None)
            else:
                holder[name] = [e for e in elements if e not in matching]
            continue
        if not matching:
            if op == "replace" and not path.sub:
                raise ScimError(400, "no element matches the filter", "noTarget")
            matching = [_element_from_filter(path.value_filter)]
            elements.append(matching[0])
            holder[name] = elements
        for element in matching:
            if path.sub:
                element[path.sub] = value
            elif isinstance(value, dict):
                element.update(value)
            else:
                raise invalid("a filtered element is replaced by an object")
    return canonicalize(doc, schema)


def _element_from_filter(flt: grammar.Filter) -> dict[str, Any]:
    """``emails[type eq "work"].value`` on a missing element creates ``{"type": "work"}``."""
    if isinstance(flt, grammar.Compare) and flt.op == "eq":
        return {flt.path.attr: flt.value}
    raise ScimError(400, "no element matches the filter", "noTarget")
