"""SCIM 2.0 Users over real HTTPS (RFC 7644 §3): create, get, list, PUT, PATCH, DELETE, errors."""

from __future__ import annotations

import os
from pathlib import Path

from ops_helpers import Served
from ops_helpers import BASE, GROUP, PATCH, USER, USER_EXT, Client, cli, make_token, scim_error
from schoolsuite.config import load_config
from schoolsuite.instance import open_store
from schoolsuite.storage import accounts as directory

PASSWORD = "correct horse battery"


def _store_has(served: Served, address: str) -> bool:
    store = open_store(load_config(served.instance.config))
    try:
        with store.read() as txn:
            return directory.find_account_id(txn, address) is not None
    finally:
        store.close()


def test_create_returns_resource_location_and_etag(served: Served) -> None:
    """POST /Users answers 201 with the resource, its Location and ETag; the address is normalized."""
    c = served.client()
    reply = c.create_user("Create.Me@School.Example", name={"givenName": "Cre", "familyName": "Ate"},
                          externalId="portal-17")
    assert reply.status == 201, reply.raw
    doc = reply.json
    assert doc["userName"] == "create.me@school.example"
    assert doc["displayName"] == "Cre Ate" and doc["externalId"] == "portal-17" and doc["active"] is True
    assert reply.headers["location"].endswith(f"{BASE}/Users/{doc['id']}")
    assert reply.headers["etag"] == doc["meta"]["version"]
    assert "password" not in doc
    got = c.request("GET", f"{BASE}/Users/{doc['id']}")
    assert got.status == 200 and got.json == doc


def test_list_filter_username_and_paging(served: Served) -> None:
    """GET /Users?filter=userName eq "…" finds exactly one user; startIndex/count page a list."""
    c = served.client()
    for i in range(3):
        assert c.create_user(f"page{i}@school.example").status == 201
    found = c.find_user("PAGE1@school.example")
    assert found is not None and found["userName"] == "page1@school.example"
    assert c.find_user("nobody@school.example") is None
    reply = c.request("GET", f'{BASE}/Users?filter=userName%20sw%20%22page%22&startIndex=2&count=1')
    body = reply.json
    assert body["totalResults"] == 3 and body["startIndex"] == 2 and body["itemsPerPage"] == 1
    assert body["Resources"][0]["userName"] == "page1@school.example"


def test_patch_rename_keeps_old_address_as_alias(served: Served) -> None:
    """Renaming (PATCH userName) makes the old address an alias: both find the same account."""
    c = served.client()
    uid = c.create_user("old.name@school.example").json["id"]
    reply = c.patch("Users", uid, {"op": "replace", "path": "userName", "value": "new.name@school.example"})
    assert reply.status == 200, reply.raw
    emails = [e["value"] for e in reply.json["emails"]]
    assert reply.json["userName"] == "new.name@school.example" and "old.name@school.example" in emails
    found = c.request("GET", f'{BASE}/Users?filter=emails%20eq%20%22old.name@school.example%22').json
    assert [r["id"] for r in found["Resources"]] == [uid]


def test_patch_active_quota_and_aliases(served: Served) -> None:
    """PATCH sets active, the quota extension and email aliases; the audit log names each change."""
    c = served.client()
    uid = c.create_user("patchme@school.example").json["id"]
    reply = c.patch("Users", uid,
                    {"op": "Replace", "value": {"active": False}},
                    {"op": "add", "path": f"{USER_EXT}:quota", "value": 5 << 30},
                    {"op": "add", "path": "emails", "value": [{"value": "pm@school.example", "type": "other"}]})
    assert reply.status == 200, reply.raw
    doc = reply.json
    assert doc["active"] is False and doc[USER_EXT]["quota"] == 5 << 30
    assert "pm@school.example" in [e["value"] for e in doc["emails"]]
    reply = c.patch("Users", uid, {"op": "remove", "path": 'emails[value eq "pm@school.example"]'})
    assert "pm@school.example" not in [e["value"] for e in reply.json["emails"]]
    log = cli(served.instance, "audit").stdout
    assert "token:portal\tuser.patch\tpatchme@school.example\tactive=false, aliases, quota" in log


def test_put_replaces_the_user(served: Served) -> None:
    """PUT /Users/{id} replaces every attribute: omitted aliases and quota go away."""
    c = served.client()
    uid = c.create_user("putme@school.example", emails=[{"value": "alias.put@school.example"}],
                        schemas=[USER, USER_EXT], **{USER_EXT: {"quota": 1 << 30}}).json["id"]
    reply = c.request("PUT", f"{BASE}/Users/{uid}", {"schemas": [USER], "userName": "putme@school.example",
                                                     "displayName": "Put Me"})
    assert reply.status == 200, reply.raw
    doc = reply.json
    assert doc["displayName"] == "Put Me" and USER_EXT not in doc
    assert [e["value"] for e in doc["emails"]] == ["putme@school.example"]


def test_etag_preconditions(served: Served) -> None:
    """If-Match with a stale ETag → 412 and nothing changes; If-None-Match with the current one → 304."""
    c = served.client()
    created = c.create_user("etag@school.example")
    uid, tag = created.json["id"], created.headers["etag"]
    assert c.request("GET", f"{BASE}/Users/{uid}", headers={"If-None-Match": tag}).status == 304
    assert c.patch("Users", uid, {"op": "replace", "path": "displayName", "value": "One"},
                   headers={"If-Match": tag}).status == 200
    stale = c.patch("Users", uid, {"op": "replace", "path": "displayName", "value": "Two"},
                    headers={"If-Match": tag})
    scim_error(stale, 412)
    assert c.request("GET", f"{BASE}/Users/{uid}").json["displayName"] == "One"


def test_patch_failing_half_way_changes_nothing(served: Served) -> None:
    """A PATCH whose last operation is invalid leaves the user exactly as it was."""
    c = served.client()
    before = c.create_user("atomic@school.example").json
    reply = c.patch("Users", before["id"],
                    {"op": "replace", "path": "displayName", "value": "Changed"},
                    {"op": "replace", "path": "active", "value": False},
                    {"op": "add", "path": "emails", "value": [{"value": "not an address"}]})
    scim_error(reply, 400, "invalidValue")
    after = c.request("GET", f"{BASE}/Users/{before['id']}").json
    assert after == before


def test_delete_crypto_shreds(served: Served) -> None:
    """DELETE answers 204; the account and its addresses are gone from the store; a second DELETE is 404."""
    c = served.client()
    uid = c.create_user("gone@school.example", emails=[{"value": "gone.alias@school.example"}]).json["id"]
    assert c.request("DELETE", f"{BASE}/Users/{uid}").status == 204
    scim_error(c.request("GET", f"{BASE}/Users/{uid}"), 404)
    scim_error(c.request("DELETE", f"{BASE}/Users/{uid}"), 404)
    assert not _store_has(served, "gone@school.example") and not _store_has(served, "gone.alias@school.example")
    assert "user.delete\tgone@school.example\tdata key destroyed" in cli(served.instance, "audit").stdout


def test_token_missing_wrong_or_revoked_is_401(served: Served) -> None:
    """No token, a wrong token and a revoked token all get 401 with a SCIM error body and a Bearer challenge."""
    scim_error(served.client(token=None).request("GET", f"{BASE}/Users"), 401)
    wrong = served.token[:-4] + ("AAAA" if not served.token.endswith("AAAA") else "BBBB")
    reply = served.client(token=wrong).request("GET", f"{BASE}/Users")
    scim_error(reply, 401)
    assert reply.headers["www-authenticate"].startswith("Bearer")
    token = make_token(served.instance, "short-lived")
    c = served.client(token=token)
    assert c.request("GET", f"{BASE}/ServiceProviderConfig").status == 200
    assert cli(served.instance, "admin-token", "del", "short-lived").returncode == 0
    scim_error(served.client(token=token).request("GET", f"{BASE}/ServiceProviderConfig"), 401)
    # A refused POST is answered before its body is read.
    scim_error(served.client(token=None).create_user("x@school.example"), 401)


def test_user_password_does_not_open_the_api(served: Served) -> None:
    """A teacher's address and password (Basic or as a bearer) never authenticate the admin API."""
    c = served.client()
    assert c.create_user("teacher@school.example", password=PASSWORD).status == 201
    basic = Client(served.instance, basic=("teacher@school.example", PASSWORD))
    scim_error(basic.request("GET", f"{BASE}/Users"), 401)
    scim_error(served.client(token=PASSWORD).request("GET", f"{BASE}/Users"), 401)


def test_token_is_stored_hashed(served: Served) -> None:
    """The token's secret appears nowhere in the store's files."""
    token = make_token(served.instance, "hashed-check")
    secret = token.split("_", 2)[2].encode()  # sst_<id>_<secret>; the secret may itself hold "_"
    assert len(secret) == 43
    data = Path(load_config(served.instance.config).paths.data_dir)
    for name in os.listdir(data):
        assert secret not in (data / name).read_bytes()


def test_bad_requests(served: Served) -> None:
    """Malformed JSON, unknown attributes, invalid addresses, wrong types, duplicates → 400/409 with scimType."""
    c = served.client()
    scim_error(c.request("POST", f"{BASE}/Users", raw=b"{not json"), 400, "invalidSyntax")
    scim_error(c.create_user("u1@school.example", shoeSize=42), 400, "invalidSyntax")
    scim_error(c.create_user("not-an-address"), 400, "invalidValue")
    scim_error(c.create_user("u2@school.example", active="yes"), 400, "invalidValue")
    scim_error(c.request("POST", f"{BASE}/Users", {"userName": "u3@school.example"}), 400, "invalidSyntax")
    scim_error(c.create_user("u4@school.example", password="short"), 400, "invalidValue")
    assert c.create_user("dup@school.example").status == 201
    scim_error(c.create_user("DUP@school.example"), 409, "uniqueness")
    uid = c.create_user("other@school.example").json["id"]
    scim_error(c.patch("Users", uid, {"op": "replace", "path": "userName", "value": "dup@school.example"}),
               409, "uniqueness")
    scim_error(c.patch("Users", uid, {"op": "replace", "path": "id", "value": "x"}), 400, "mutability")
    scim_error(c.patch("Users", uid, {"op": "jump", "path": "active", "value": True}), 400, "invalidSyntax")
    scim_error(c.request("GET", f'{BASE}/Users?filter=userName%20eq'), 400, "invalidFilter")
    scim_error(c.request("GET", f"{BASE}/Users/{'0' * 32}"), 404)
    scim_error(c.request("GET", f"{BASE}/Nothing"), 404)
    scim_error(c.request("GET", f"{BASE}/Me"), 501)
    scim_error(c.request("POST", f"{BASE}/Bulk", {"schemas": []}), 501)


def test_group_address_cannot_become_a_user(served: Served) -> None:
    """A group's list address is taken: creating a user with it is a 409 uniqueness error."""
    c = served.client()
    reply = c.request("POST", f"{BASE}/Groups", {"schemas": [GROUP], "displayName": "Art Teachers"})
    assert reply.status == 201, reply.raw
    scim_error(c.create_user("art-teachers@school.example"), 409, "uniqueness")


def test_discovery_documents(served: Served) -> None:
    """ServiceProviderConfig, ResourceTypes and Schemas describe patch, filter, etag and our extensions."""
    c = served.client()
    spc = c.request("GET", f"{BASE}/ServiceProviderConfig").json
    assert spc["patch"]["supported"] and spc["filter"]["supported"] and spc["etag"]["supported"]
    assert spc["bulk"]["supported"] is False
    types = {t["id"]: t for t in c.request("GET", f"{BASE}/ResourceTypes").json["Resources"]}
    assert types["User"]["endpoint"] == "/Users" and types["User"]["schemaExtensions"][0]["schema"] == USER_EXT
    schemas = {s["id"] for s in c.request("GET", f"{BASE}/Schemas").json["Resources"]}
    assert {USER, GROUP, USER_EXT} <= schemas
    one = c.request("GET", f"{BASE}/Schemas/{USER}").json
    assert "userName" in [a["name"] for a in one["attributes"]]
    assert PATCH not in schemas


def test_patch_active_as_string(served: Served) -> None:
    """Azure AD's PATCH {"op": "Replace", "path": "active", "value": "False"} disables the user."""
    c = served.client()
    uid = c.create_user("azure.user@school.example").json["id"]
    reply = c.patch("Users", uid, {"op": "Replace", "path": "active", "value": "False"})
    assert reply.status == 200 and reply.json["active"] is False
    scim_error(c.patch("Users", uid, {"op": "replace", "path": "active", "value": "nope"}), 400, "invalidValue")


def test_accounts_gauge_follows_creations_and_deletions(served: Served) -> None:
    """schoolsuite_accounts on /metrics equals the number of users after SCIM creates and deletes."""
    import re
    import urllib.request

    c = served.client()
    uid = c.create_user("gauge1@school.example").json["id"]
    c.create_user("gauge2@school.example")
    assert c.request("DELETE", f"{BASE}/Users/{uid}").status == 204
    total = c.request("GET", f"{BASE}/Users?count=0").json["totalResults"]
    url = f"http://127.0.0.1:{served.instance.ports['metrics']}/metrics"
    text = urllib.request.urlopen(url, timeout=30).read().decode()
    assert float(re.search(r"^schoolsuite_accounts (\S+)$", text, re.M).group(1)) == total
