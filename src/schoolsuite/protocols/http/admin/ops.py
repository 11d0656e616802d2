"""SCIM operations (RFC 7644 §3): one function per method and resource type.

Each takes the :class:`Scim` context and the parsed request and returns a
Deferred of a :class:`Reply` (or fails with :class:`ScimError`). Changes run
as one transaction on the store writer thread; password hashing runs on the
reactor's thread pool before it, never inside the write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, threads

from ....services import passwords
from ....services.groups import GroupService
from ....services.provisioning import ProvisioningError, ProvisioningService, UserRecord
from . import discovery, grammar, resources
from .errors import ScimError, invalid, not_found
from .resources import GROUP, GROUP_ATTRS, LIST_RESPONSE, USER, USER_ATTRS, USER_EXT


@dataclass
class Reply:
    status: int
    body: Any = None
    etag: str | None = None
    location: str | None = None


@dataclass
class Call:
    """One parsed request: method, the path below ``/scim/v2``, query, JSON body, preconditions."""

    method: str
    path: list[str]
    query: dict[str, str]
    body: Any = None
    if_match: str | None = None
    if_none_match: str | None = None
    actor: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Scim:
    """What the operations use."""

    provisioning: ProvisioningService
    groups: GroupService
    writer: Any
    reactor: Any
    base: str
    domain: str

    def in_thread(self, fn: Any, *args: Any) -> defer.Deferred[Any]:
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), fn, *args)


def _refused(failure: Any) -> Any:
    """Provisioning refusals → SCIM errors (RFC 7644 §3.12)."""
    error = failure.trap(ProvisioningError, passwords.PasswordPolicyError)
    if error is passwords.PasswordPolicyError:
        raise invalid(f"password: {failure.getErrorMessage()}")
    kind = failure.value.kind
    if kind == "conflict":
        raise ScimError(409, failure.getErrorMessage(), "uniqueness")
    if kind == "missing":
        raise not_found()
    raise invalid(failure.getErrorMessage())


def _if_match(call: Call, render: Any) -> Any:
    """A precondition run inside the write: the stored resource must still carry the If-Match ETag."""
    wanted = call.if_match
    if not wanted or wanted.strip() == "*":
        return None

    def check(current: Any) -> None:
        tags = {t.strip() for t in wanted.split(",")}
        if resources.etag(render(current)) not in tags:
            raise ScimError(412, "the resource has changed (ETag mismatch)")
    return check


def _id(text: str) -> bytes:
    if len(text) != 32:
        raise not_found()
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise not_found() from None


def _select(doc: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
    """RFC 7644 §3.4.2.5 attributes / excludedAttributes (top-level names)."""
    keep = {"id", "schemas", "meta"}
    if query.get("attributes"):
        wanted = {a.strip().split(".")[0].lower() for a in query["attributes"].split(",")}
        return {k: v for k, v in doc.items() if k in keep or k.lower() in wanted}
    if query.get("excludedAttributes"):
        dropped = {a.strip().split(".")[0].lower() for a in query["excludedAttributes"].split(",")}
        return {k: v for k, v in doc.items() if k in keep or k.lower() not in dropped}
    return doc


def _page(docs: list[dict[str, Any]], query: dict[str, str]) -> dict[str, Any]:
    """RFC 7644 §3.4.2.4: 1-based startIndex, count capped at maxResults."""
    try:
        start = max(1, int(query.get("startIndex", "1")))
        count = min(discovery.MAX_RESULTS, max(0, int(query.get("count", str(discovery.MAX_RESULTS)))))
    except ValueError:
        raise invalid("startIndex and count are integers") from None
    page = docs[start - 1:start - 1 + count]
    return {"schemas": [LIST_RESPONSE], "totalResults": len(docs), "startIndex": start,
            "itemsPerPage": len(page), "Resources": [_select(d, query) for d in page]}


def _reply_resource(doc: dict[str, Any], status: int = 200, query: dict[str, str] | None = None,
                    location: bool = False) -> Reply:
    return Reply(status, _select(doc, query or {}), doc["meta"]["version"],
                 doc["meta"]["location"] if location else None)


# -- discovery ----------------------------------------------------------------------


def discover(scim: Scim, call: Call) -> defer.Deferred[Reply]:
    """GET /ServiceProviderConfig, /ResourceTypes[/id], /Schemas[/id] (RFC 7644 §4)."""
    if call.method != "GET":
        raise ScimError(405, "only GET is allowed here")
    kind = call.path[0]
    if kind == "ServiceProviderConfig":
        return defer.succeed(Reply(200, discovery.service_provider_config(scim.base)))
    items = discovery.resource_types(scim.base) if kind == "ResourceTypes" else discovery.schemas(scim.base)
    if len(call.path) == 2:
        for item in items:
            if item["id"] == call.path[1]:
                return defer.succeed(Reply(200, item))
        raise not_found()
    return defer.succeed(Reply(200, {"schemas": [LIST_RESPONSE], "totalResults": len(items), "startIndex": 1,
                                     "itemsPerPage": len(items), "Resources": items}))


# -- users ----------------------------------------------------------------------------


def users(scim: Scim, call: Call) -> defer.Deferred[Reply]:
    """/Users and /Users/{id}."""
    prov = scim.provisioning
    render = lambda record: resources.render_user(record, scim.base)  # noqa: E731
    if len(call.path) == 1:
        if call.method == "GET":
            return defer.succeed(Reply(200, _page(_find_users(scim, call.query.get("filter")), call.query)))
        if call.method == "POST":
            return _create_user(scim, call)
        raise ScimError(405, "use GET or POST on /Users")
    account_id = _id(call.path[1])
    if call.method == "GET":
        record = prov.get_user(account_id)
        if record is None:
            raise not_found("user")
        doc = render(record)
        if call.if_none_match and doc["meta"]["version"] in call.if_none_match:
            return defer.succeed(Reply(304, None, doc["meta"]["version"]))
        return defer.succeed(_reply_resource(doc, query=call.query))
    if call.method == "DELETE":
        d = scim.writer.run(prov.delete_user, account_id, call.actor, _if_match(call, render))
        return d.addCallbacks(lambda _: Reply(204), _refused)
    if call.method == "PUT":
        return _store_user(scim, call, account_id, call.body, "user.replace")
    if call.method == "PATCH":
        ops = resources.parse_patch(call.body)
        record = prov.get_user(account_id)
        if record is None:
            raise not_found("user")
        patched = resources.apply_patch(render(record), ops, USER_ATTRS, USER)
        if USER_EXT in patched and USER_EXT not in patched.get("schemas", []):
            patched["schemas"] = [*patched.get("schemas", []), USER_EXT]
        if USER_EXT in patched and patched[USER_EXT].get("quota") is None:
            patched.pop(USER_EXT)
        return _store_user(scim, call, account_id, patched, "user.patch", expected=record)
    raise ScimError(405, "use GET, PUT, PATCH or DELETE on /Users/{id}")


def _find_users(scim: Scim, text: str | None) -> list[dict[str, Any]]:
    if not text:
        return [resources.render_user(r, scim.base) for r in scim.provisioning.list_users()]
    flt = grammar.parse_filter(text)
    # Fast path for the portal's usual lookup: userName eq "address" (one index read).
    if (isinstance(flt, grammar.Compare) and flt.op == "eq" and not flt.path.sub
            and flt.path.attr.lower() == "username" and isinstance(flt.value, str)):
        try:
            record = scim.provisioning.find_user(resources._address(flt.value, "userName"))
        except ScimError:
            return []
        if record is None or record.account.address != resources._address(flt.value, "userName"):
            return []
        return [resources.render_user(record, scim.base)]
    docs = [resources.render_user(r, scim.base) for r in scim.provisioning.list_users()]
    return [d for d in docs if grammar.evaluate(flt, d, (USER.lower(),))]


def _create_user(scim: Scim, call: Call) -> defer.Deferred[Reply]:
    spec, password = resources.user_spec(call.body)
    if scim.provisioning.find_user(spec.address) is not None:
        raise ScimError(409, f"userName {spec.address} is taken", "uniqueness")
    hashed = _hash(scim, password, spec.address)
    d = hashed.addCallback(lambda h: scim.writer.run(scim.provisioning.create_user, spec, h or "", call.actor))
    d.addErrback(_refused)
    return d.addCallback(lambda record: _reply_resource(resources.render_user(record, scim.base), 201,
                                                        location=True))


def _hash(scim: Scim, password: str | None, address: str) -> defer.Deferred[str | None]:
    """argon2id off the reactor; no password, no hashing (the account logs in once one is set)."""
    if password is None:
        return defer.succeed(None)
    try:
        passwords.check_password_policy(password, address)
    except passwords.PasswordPolicyError as exc:
        raise invalid(f"password: {exc}") from None
    return scim.in_thread(passwords.hash_secret, password)


def _store_user(scim: Scim, call: Call, account_id: bytes, body: Any, action: str,
                expected: UserRecord | None = None) -> defer.Deferred[Reply]:
    spec, password = resources.user_spec(body)
    render = lambda record: resources.render_user(record, scim.base)  # noqa: E731
    check = _if_match(call, render)
    if expected is not None:
        # PATCH read the resource before the write: the write must see the same one.
        seen = resources.etag(render(expected))
        user_check = check

        def check(current: Any) -> None:  # noqa: F811
            if resources.etag(render(current)) != seen:
                raise ScimError(409, "the resource changed during the request; retry")
            if user_check is not None:
                user_check(current)
    hashed = _hash(scim, password, spec.address)
    d = hashed.addCallback(lambda h: scim.writer.run(scim.provisioning.replace_user, account_id, spec, h,
                                                     call.actor, action, check))
    d.addErrback(_refused)
    return d.addCallback(lambda record: _reply_resource(render(record), query=call.query))


# -- groups ---------------------------------------------------------------------------


def _member_names(scim: Scim, infos: list[Any]) -> dict[bytes, str]:
    names: dict[bytes, str] = {}
    for info in infos:
        for member in scim.groups.members(info.id):
            names[member.account_id] = member.name or member.address
    return names


def _render_group(scim: Scim, info: Any) -> dict[str, Any]:
    return resources.render_group(info, scim.base, _member_names(scim, [info]))


def groups(scim: Scim, call: Call) -> defer.Deferred[Reply]:
    """/Groups and /Groups/{id}."""
    prov = scim.provisioning
    render = lambda info: _render_group(scim, info)  # noqa: E731
    if len(call.path) == 1:
        if call.method == "GET":
            infos = scim.groups.list()
            docs = [render(i) for i in infos]
            if call.query.get("filter"):
                flt = grammar.parse_filter(call.query["filter"])
                docs = [d for d in docs if grammar.evaluate(flt, d, (GROUP.lower(),))]
            return defer.succeed(Reply(200, _page(docs, call.query)))
        if call.method == "POST":
            spec = resources.group_spec(call.body, scim.domain)
            d = scim.writer.run(prov.create_group, spec, call.actor)
            d.addErrback(_refused)
            return d.addCallback(lambda info: _reply_resource(render(info), 201, location=True))
        raise ScimError(405, "use GET or POST on /Groups")
    group_id = _id(call.path[1])
    info = scim.groups.get(group_id)
    if info is None:
        raise not_found("group")
    if call.method == "GET":
        doc = render(info)
        if call.if_none_match and doc["meta"]["version"] in call.if_none_match:
            return defer.succeed(Reply(304, None, doc["meta"]["version"]))
        return defer.succeed(_reply_resource(doc, query=call.query))
    if call.method == "DELETE":
        d = scim.writer.run(prov.delete_group, group_id, call.actor, _if_match(call, render))
        return d.addCallbacks(lambda _: Reply(204), _refused)
    if call.method in ("PUT", "PATCH"):
        if call.method == "PUT":
            body, action = call.body, "group.replace"
        else:
            body = resources.apply_patch(render(info), resources.parse_patch(call.body), GROUP_ATTRS, GROUP)
            action = "group.patch"
        spec = resources.group_spec(body, scim.domain)
        d = scim.writer.run(prov.replace_group, group_id, spec, call.actor, action, _if_match(call, render))
        d.addErrback(_refused)
        return d.addCallback(lambda new: _reply_resource(render(new), query=call.query))
    raise ScimError(405, "use GET, PUT, PATCH or DELETE on /Groups/{id}")


ROUTES = {"Users": users, "Groups": groups, "ServiceProviderConfig": discover, "ResourceTypes": discover,
          "Schemas": discover}
