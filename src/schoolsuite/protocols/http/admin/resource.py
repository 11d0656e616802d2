"""``/admin/``: the Twisted resource of the provisioning API (bearer tokens, SCIM JSON).

Authenticates every request by an admin token (``Authorization: Bearer``;
never a user's password), parses the JSON body, dispatches to ops.py and
renders every outcome, errors included, in :func:`_respond`/`_fail` — the one
place where exceptions become wire replies (RFC 7644 §3.12 error bodies; a
server fault is logged with an incident id and never shown).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import resource, server

from .... import metrics
from ....services.admin_tokens import AdminTokens
from ..body import Accept, Reject, RequestHead
from . import discovery, ops
from .errors import ScimError

log = Logger(namespace="schoolsuite.admin")
SCIM_JSON = b"application/scim+json"
PREFIX = ["scim", "v2"]
_CHALLENGE = b'Bearer realm="schoolsuite-admin"'
_NO_TOKEN = "a valid admin token is required (Authorization: Bearer TOKEN)"


def _operation(call: ops.Call) -> str:
    """A bounded metrics label: resource kind and verb."""
    if not call.path:
        return "refused"  # not authenticated, or no such endpoint
    kind = {"Users": "user", "Groups": "group"}.get(call.path[0], "discovery")
    if kind == "discovery":
        return kind
    if len(call.path) == 1:
        return f"{kind}.{'create' if call.method == 'POST' else 'list'}"
    return f"{kind}.{call.method.lower()}"


class AdminResource(resource.Resource):
    """Every path under ``/admin/``."""

    isLeaf = True

    def __init__(self, scim: ops.Scim, tokens: AdminTokens) -> None:
        super().__init__()
        self._scim = scim
        self._tokens = tokens

    def render(self, request: server.Request) -> Any:
        method = request.method.decode("ascii", "replace")
        call = ops.Call(method, [], {})
        try:
            call = self._parse(request, method)
            d = defer.maybeDeferred(self._dispatch, call)
        except Exception:
            d = defer.fail()
        d.addCallbacks(lambda reply: self._respond(request, call, reply),
                       lambda failure: self._fail(request, call, failure))
        return server.NOT_DONE_YET

    def _parse(self, request: server.Request, method: str) -> ops.Call:
        label = self._authenticate(request)
        path = [p.decode("utf-8", "replace") for p in request.postpath if p]
        if path[:2] == PREFIX and len(path) == 3 and path[2] in ("Me", "Bulk"):
            raise ScimError(501, f"/{path[2]} is not supported (see ServiceProviderConfig)")  # RFC 7644 §3.11, §3.7
        if path[:2] != PREFIX or len(path) < 3 or path[2] not in ops.ROUTES or len(path) > 4:
            raise ScimError(404, "no such endpoint; the SCIM 2.0 base is /admin/scim/v2/")
        query = {k.decode("utf-8", "replace"): v[-1].decode("utf-8", "replace") for k, v in request.args.items()}
        body = None
        if method in ("POST", "PUT", "PATCH"):
            raw = request.content.read(discovery.MAX_BODY + 1) if request.content is not None else b""
            if len(raw) > discovery.MAX_BODY:
                raise ScimError(413, "the request body is too large")
            try:
                body = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                raise ScimError(400, "the body is not valid JSON", "invalidSyntax") from None
        def header(name: bytes) -> str | None:
            value = request.getHeader(name)
            return None if value is None else value.decode("latin-1")
        return ops.Call(method, path[2:], query, body, header(b"if-match"), header(b"if-none-match"),
                        actor=f"token:{label}")

    def _label(self, value: str) -> str | None:
        scheme, _, token = value.partition(" ")
        return self._tokens.check(token) if scheme.lower() == "bearer" and token else None

    def body_gate(self, head: RequestHead) -> Accept | Reject:
        """Refuse a request without a valid token before its body is read (body.py)."""
        value = (head.headers.getRawHeaders(b"authorization") or [b""])[0].decode("latin-1")
        if self._label(value) is None:
            metrics.ADMIN_REQUESTS.labels("refused", "401").inc()
            body = json.dumps(ScimError(401, _NO_TOKEN).body()).encode()
            return Reject(401, ((b"WWW-Authenticate", _CHALLENGE), (b"Content-Type", SCIM_JSON)), body)
        return Accept(max_body=discovery.MAX_BODY)

    def _authenticate(self, request: server.Request) -> str:
        label = self._label((request.getHeader(b"authorization") or b"").decode("latin-1"))
        if label is None:
            # RFC 6750 §3: a bearer challenge; no hint which part was wrong.
            request.setHeader(b"WWW-Authenticate", _CHALLENGE)
            raise ScimError(401, _NO_TOKEN)
        return label

    def _dispatch(self, call: ops.Call) -> defer.Deferred[ops.Reply]:
        return ops.ROUTES[call.path[0]](self._scim, call)

    def _respond(self, request: server.Request, call: ops.Call, reply: ops.Reply) -> None:
        metrics.ADMIN_REQUESTS.labels(_operation(call), str(reply.status)).inc()
        if request._disconnected:
            return
        request.setResponseCode(reply.status)
        if reply.etag:
            request.setHeader(b"ETag", reply.etag.encode())
        if reply.location:
            request.setHeader(b"Location", reply.location.encode())
        if reply.body is None:
            request.finish()
            return
        request.setHeader(b"Content-Type", SCIM_JSON + b"; charset=utf-8")
        request.write(json.dumps(reply.body, ensure_ascii=False).encode())
        request.finish()

    def _fail(self, request: server.Request, call: ops.Call, failure: Any) -> None:
        if failure.check(ScimError):
            error = failure.value
        else:
            incident = uuid.uuid4().hex[:12]
            log.failure("admin API fault: incident={incident}", failure, incident=incident)
            error = ScimError(500, f"internal error (incident {incident})")
        body = json.dumps(error.body()).encode()
        metrics.ADMIN_REQUESTS.labels(_operation(call), str(error.status)).inc()
        if request._disconnected:
            return
        request.setResponseCode(error.status)
        request.setHeader(b"Content-Type", SCIM_JSON + b"; charset=utf-8")
        request.write(body)
        request.finish()
