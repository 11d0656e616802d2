"""SCIM Groups over HTTPS, and the groups service API the SMTP and CardDAV code use."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ops_helpers import Served
from ops_helpers import BASE, GROUP, GROUP_EXT, scim_error
from schoolsuite.config import load_config
from schoolsuite.instance import open_store
from schoolsuite.services.groups import GroupService


@pytest.fixture
def groups(served: Served) -> Iterator[GroupService]:
    """The groups service on the running server's store (a second reader, as LMDB allows)."""
    store = open_store(load_config(served.instance.config))
    yield GroupService(store)
    store.close()


def _users(served: Served, *names: str) -> list[str]:
    c = served.client()
    return [c.create_user(f"{n}@school.example", displayName=n.title()).json["id"] for n in names]


def test_group_is_a_list_address_with_members(served: Served, groups: GroupService) -> None:
    """POST /Groups makes a list address (slug of displayName) that expand() resolves to its members."""
    a, b = _users(served, "ga", "gb")
    c = served.client()
    reply = c.request("POST", f"{BASE}/Groups", {"schemas": [GROUP], "displayName": "Physics Department",
                                                 "members": [{"value": a}, {"value": b}]})
    assert reply.status == 201, reply.raw
    doc = reply.json
    assert doc[GROUP_EXT]["address"] == "physics-department@school.example"
    assert {m["display"] for m in doc["members"]} == {"Ga", "Gb"}
    assert sorted(x.hex() for x in groups.expand("Physics-Department@School.Example")) == sorted([a, b])
    assert groups.expand("ga@school.example") is None  # an account, not a group
    assert [g.address for g in groups.list_for(bytes.fromhex(a))] == ["physics-department@school.example"]
    names = {m.address for m in groups.members(bytes.fromhex(doc["id"]))}
    assert names == {"ga@school.example", "gb@school.example"}


def test_patch_members_and_explicit_address(served: Served, groups: GroupService) -> None:
    """PATCH add/remove members (Azure/Okta style) and our address extension change the group."""
    a, b, c_id = _users(served, "pa", "pb", "pc")
    c = served.client()
    gid = c.request("POST", f"{BASE}/Groups", {"schemas": [GROUP, GROUP_EXT], "displayName": "Class 7b",
                                               GROUP_EXT: {"address": "7b-teachers@school.example"},
                                               "members": [{"value": a}]}).json["id"]
    reply = c.patch("Groups", gid, {"op": "add", "path": "members", "value": [{"value": b}, {"value": c_id}]},
                    {"op": "remove", "path": f'members[value eq "{a}"]'})
    assert reply.status == 200, reply.raw
    assert {m["value"] for m in reply.json["members"]} == {b, c_id}
    assert sorted(x.hex() for x in groups.expand("7b-teachers@school.example")) == sorted([b, c_id])
    assert groups.list_for(bytes.fromhex(a)) == []
    listed = c.request("GET", f'{BASE}/Groups?filter=displayName%20eq%20%22Class%207b%22').json
    assert [g["id"] for g in listed["Resources"]] == [gid]
    excluded = c.request("GET", f"{BASE}/Groups/{gid}?excludedAttributes=members").json
    assert "members" not in excluded and excluded["displayName"] == "Class 7b"


def test_deleted_user_leaves_groups(served: Served, groups: GroupService) -> None:
    """DELETE of a user removes it from every group in the same transaction."""
    a, b = _users(served, "da", "db")
    c = served.client()
    gid = c.request("POST", f"{BASE}/Groups", {"schemas": [GROUP], "displayName": "Leavers",
                                               "members": [{"value": a}, {"value": b}]}).json["id"]
    assert c.request("DELETE", f"{BASE}/Users/{a}").status == 204
    assert [x.hex() for x in groups.expand("leavers@school.example")] == [b]
    assert [m["value"] for m in c.request("GET", f"{BASE}/Groups/{gid}").json["members"]] == [b]


def test_group_errors(served: Served) -> None:
    """Unknown members, a taken address, a missing displayName → 400/409; DELETE then 404."""
    (a,) = _users(served, "ea")
    c = served.client()
    scim_error(c.request("POST", f"{BASE}/Groups", {"schemas": [GROUP], "displayName": "X",
                                                    "members": [{"value": "0" * 32}]}), 400, "invalidValue")
    scim_error(c.request("POST", f"{BASE}/Groups", {"schemas": [GROUP, GROUP_EXT], "displayName": "Y",
                                                    GROUP_EXT: {"address": "ea@school.example"}}), 409, "uniqueness")
    scim_error(c.request("POST", f"{BASE}/Groups", {"schemas": [GROUP], "members": []}), 400, "invalidValue")
    gid = c.request("POST", f"{BASE}/Groups", {"schemas": [GROUP], "displayName": "Temp"}).json["id"]
    scim_error(c.request("POST", f"{BASE}/Groups", {"schemas": [GROUP], "displayName": "Temp"}), 409, "uniqueness")
    assert c.request("DELETE", f"{BASE}/Groups/{gid}").status == 204
    scim_error(c.request("GET", f"{BASE}/Groups/{gid}"), 404)


def test_azure_style_member_removal(served: Served, groups: GroupService) -> None:
    """PATCH remove with path "members" and a value list removes only those members (Azure AD's form)."""
    a, b, c_id = _users(served, "za", "zb", "zc")
    c = served.client()
    gid = c.request("POST", f"{BASE}/Groups", {"schemas": [GROUP], "displayName": "Azure",
                                               "members": [{"value": a}, {"value": b}, {"value": c_id}]}).json["id"]
    reply = c.patch("Groups", gid, {"op": "Remove", "path": "members", "value": [{"value": a}, {"value": c_id}]})
    assert reply.status == 200, reply.raw
    assert [m["value"] for m in reply.json["members"]] == [b]
    assert [x.hex() for x in groups.expand("azure@school.example")] == [b]
