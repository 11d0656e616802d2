"""Group address books over HTTPS: one read-only book per group in each member's home (groupbooks.py)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from schoolsuite.services.groups import GroupService
from schoolsuite.storage import Store, load_master_key
from schoolsuite.storage import accounts as directory
from support import require_program

from dav_helpers import PASSWORD, vcard
from dav_server import DavServer

A, B = "anna@school.example", "bert@school.example"
CARL, DORA = "carl@school.example", "dora@school.example"
MATHS = "maths@school.example"
CARDS = ('<CR:addressbook-query xmlns="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav"><prop><getetag/>'
         '<CR:address-data/></prop></CR:addressbook-query>')
STATE = ('<propfind xmlns="DAV:" xmlns:CS="http://calendarserver.org/ns/"><prop><CS:getctag/><sync-token/>'
         '<displayname/><resourcetype/><current-user-privilege-set/></prop></propfind>')


def _store(dav: DavServer) -> Store:
    inst = dav.instance.dir
    return Store.open(inst / "data", load_master_key(inst / "secrets" / "master.key"))


def _ids(dav: DavServer, *addresses: str) -> list[bytes]:
    store = _store(dav)
    try:
        with store.read() as txn:
            return [directory.find_account_id(txn, a) for a in addresses]
    finally:
        store.close()


def _put_group(dav: DavServer, group_id: bytes | None, address: str, name: str, members: list[str]) -> bytes:
    """Create or replace a group through the groups service on the store (as SCIM provisioning does)."""
    store = _store(dav)
    try:
        with store.write() as txn:
            ids = [directory.find_account_id(txn, a) for a in members]
            return GroupService(store).put_in(txn, group_id, address, name, "", ids).id
    finally:
        store.close()


def _rename_account(dav: DavServer, address: str, name: str) -> None:
    store = _store(dav)
    try:
        with store.write() as txn:
            account = directory.find_account(txn, address)
            account.name = name
            directory.update_account(txn, account)
    finally:
        store.close()


@pytest.fixture(scope="module")
def maths(dav: DavServer) -> Iterator[bytes]:
    """Carl and Dora exist (no DAV login); group "Maths department" = anna + carl; bert is in no group."""
    store = _store(dav)
    try:
        with store.write() as txn:
            directory.create_account(txn, CARL, name="Carl Diaz")
            directory.create_account(txn, DORA, name="Dora Eck")
    finally:
        store.close()
    yield _put_group(dav, None, MATHS, "Maths department", [A, CARL])


def _home(dav: DavServer, user: str) -> str:
    answer = dav.request("PROPFIND", f"/dav/{user}/", STATE, user=user, headers={"Depth": "1"})
    assert answer.status == 207
    return answer.text


def _state(dav: DavServer, path: str, user: str = A) -> tuple[str, str]:
    answer = dav.request("PROPFIND", path, STATE, user=user, headers={"Depth": "0"})
    assert answer.status == 207, answer.text
    ctag = re.search(r"getctag[^>]*>([^<]+)<", answer.text).group(1)
    token = re.search(r"sync-token>([^<]+)<", answer.text).group(1)
    return ctag, token


def _sync(dav: DavServer, path: str, token: str, user: str = A) -> tuple[str, dict[str, str]]:
    """sync-collection (RFC 6578): the new token and {href name: "200"/"404"}."""
    body = (f'<sync-collection xmlns="DAV:"><sync-token>{token}</sync-token><sync-level>1</sync-level>'
            '<prop><getetag/></prop></sync-collection>')
    answer = dav.request("REPORT", path, body, user=user)
    assert answer.status == 207, answer.text
    changes = {}
    for response in re.findall(r"<response>(.*?)</response>", answer.text, re.S):
        href = re.search(r"<href>([^<]+)</href>", response).group(1).rsplit("/", 1)[1]
        changes[href] = "200" if "<propstat>" in response else "404" if " 404 " in response else "?"
    new_token = re.search(r"<sync-token>([^<]+)</sync-token>", answer.text).group(1)
    return new_token, changes


def _book(group_id: bytes, user: str = A) -> str:
    return f"/dav/{user}/group-{group_id.hex()}/"


def test_member_home_lists_the_group_book(dav: DavServer, maths: bytes) -> None:
    """A member's Depth-1 home listing has the group's book, an address book named after the group, read-only."""
    text = _home(dav, A)
    assert f"group-{maths.hex()}/</href>" in text
    response = next(r for r in re.findall(r"<response>(.*?)</response>", text, re.S) if f"group-{maths.hex()}" in r)
    assert "<displayname>Maths department</displayname>" in response
    assert "addressbook" in response
    privileges = re.search(r"current-user-privilege-set>(.*?)</[A-Za-z0-9]*:?current-user-privilege-set",
                           response, re.S).group(1)
    assert "read" in privileges and "write" not in privileges


def test_non_member_home_has_no_group_book(dav: DavServer, maths: bytes) -> None:
    """Bert, in no group, sees no group book in his home."""
    assert "group-" not in _home(dav, B)


def test_cards_are_the_members_and_the_list_address(dav: DavServer, maths: bytes) -> None:
    """One vCard per member (FN, EMAIL, UID stable per member) plus the list address card."""
    answer = dav.request("REPORT", _book(maths), CARDS, user=A, headers={"Depth": "1"})
    assert answer.status == 207
    anna, carl = _ids(dav, A, CARL)
    uids = set(re.findall(r"^UID:(.+?)\r?$", answer.text, re.M))
    assert uids == {f"schoolsuite-group-{maths.hex()}-{anna.hex()}", f"schoolsuite-group-{maths.hex()}-{carl.hex()}",
                    f"schoolsuite-group-{maths.hex()}"}
    assert "FN:Anna Berg" in answer.text and "EMAIL;TYPE=INTERNET,WORK:anna@school.example" in answer.text
    assert "FN:Carl Diaz" in answer.text and "EMAIL;TYPE=INTERNET,WORK:carl@school.example" in answer.text
    assert "FN:Maths department" in answer.text and f"EMAIL;TYPE=INTERNET,WORK:{MATHS}" in answer.text
    assert "Bert" not in answer.text and "Dora" not in answer.text
    again = dav.request("GET", _book(maths) + f"{carl.hex()}.vcf", user=A)
    assert again.status == 200 and f"UID:schoolsuite-group-{maths.hex()}-{carl.hex()}" in again.text


def test_membership_and_member_changes_move_ctag_and_sync(dav: DavServer, maths: bytes) -> None:
    """Adding a member, renaming one and removing one each change the CTag and show up in sync-collection."""
    dora = _ids(dav, DORA)[0].hex() + ".vcf"
    carl = _ids(dav, CARL)[0].hex() + ".vcf"
    ctag0, token0 = _state(dav, _book(maths))
    assert _state(dav, _book(maths)) == (ctag0, token0)  # nothing changed: same CTag and token
    token, changes = _sync(dav, _book(maths), token0)
    assert token == token0 and changes == {}

    _put_group(dav, maths, MATHS, "Maths department", [A, CARL, DORA])
    ctag1, _ = _state(dav, _book(maths))
    assert ctag1 != ctag0
    token1, changes = _sync(dav, _book(maths), token0)
    assert changes == {dora: "200"}

    _rename_account(dav, CARL, "Carl Diaz-Fuchs")
    ctag2, _ = _state(dav, _book(maths))
    assert ctag2 != ctag1
    token2, changes = _sync(dav, _book(maths), token1)
    assert changes == {carl: "200"}
    assert "FN:Carl Diaz-Fuchs" in dav.request("GET", _book(maths) + carl, user=A).text

    _put_group(dav, maths, MATHS, "Maths department", [A, CARL])
    assert _state(dav, _book(maths))[0] not in (ctag1, ctag2)
    _, changes = _sync(dav, _book(maths), token2)
    assert changes == {dora: "404"}


def test_renamed_group_renames_the_book(dav: DavServer, maths: bytes) -> None:
    """The book's display name follows the group's name, and the list card follows it too."""
    _put_group(dav, maths, MATHS, "Mathematics", [A, CARL])
    try:
        answer = dav.request("PROPFIND", _book(maths), STATE, user=A, headers={"Depth": "0"})
        assert "<displayname>Mathematics</displayname>" in answer.text
        assert "FN:Mathematics" in dav.request("GET", _book(maths) + "list.vcf", user=A).text
    finally:
        _put_group(dav, maths, MATHS, "Maths department", [A, CARL])


def test_book_is_read_only(dav: DavServer, maths: bytes) -> None:
    """PUT, DELETE, PROPPATCH and MKCOL on a group book are 403 with DAV:need-privileges (RFC 3744 §7.1.1)."""
    carl = _ids(dav, CARL)[0].hex() + ".vcf"
    book = _book(maths)
    refused = [
        ("PUT", book + "new.vcf", vcard("new"), {"Content-Type": "text/vcard"}, "write-content"),
        ("PUT", book + carl, vcard("x"), {"Content-Type": "text/vcard"}, "write-content"),
        ("DELETE", book + carl, None, {}, "unbind"),
        ("DELETE", book, None, {}, "unbind"),
        ("PROPPATCH", book, '<propertyupdate xmlns="DAV:"><set><prop><displayname>x</displayname></prop></set>'
         "</propertyupdate>", {}, "write-properties"),
    ]
    for method, path, body, headers, privilege in refused:
        answer = dav.request(method, path, body, user=A, headers=headers)
        assert answer.status == 403, (method, path, answer.status)
        assert "need-privileges" in answer.text and f"<D:{privilege}/>" in answer.text, (method, answer.text)
    assert dav.request("MKCOL", f"/dav/{A}/group-{'ab' * 16}/", user=A).status == 403
    answer = dav.request("REPORT", book, CARDS, user=A, headers={"Depth": "1"})
    assert answer.text.count("BEGIN:VCARD") == 3 and "FN:Carl Diaz" in answer.text


def test_other_users_cannot_reach_the_book(dav: DavServer, maths: bytes) -> None:
    """Bert gets 403 on Anna's book and 404 on the same group's name in his own home."""
    carl = _ids(dav, CARL)[0].hex() + ".vcf"
    assert dav.request("PROPFIND", _book(maths), STATE, user=B, headers={"Depth": "0"}).status == 403
    assert dav.request("GET", _book(maths) + carl, user=B).status == 403
    assert dav.request("PROPFIND", _book(maths, B), STATE, user=B, headers={"Depth": "0"}).status == 404
    assert dav.request("GET", _book(maths, B) + carl, user=B).status == 404
    answer = dav.request("REPORT", _book(maths, B), CARDS, user=B, headers={"Depth": "1"})
    assert answer.status == 404 and "Carl" not in answer.text


def test_book_appears_on_join_and_disappears_on_leave(dav: DavServer, maths: bytes) -> None:
    """Bert joining a group gets its book at once; leaving it, the book is gone (404)."""
    science = _put_group(dav, None, "science@school.example", "Science", [B])
    try:
        assert f"group-{science.hex()}/</href>" in _home(dav, B)
        assert dav.request("PROPFIND", _book(science, B), STATE, user=B, headers={"Depth": "0"}).status == 207
        assert f"group-{science.hex()}" not in _home(dav, A)
        _put_group(dav, science, "science@school.example", "Science", [A])
        assert "group-" not in _home(dav, B)
        assert dav.request("PROPFIND", _book(science, B), STATE, user=B, headers={"Depth": "0"}).status == 404
        assert dav.request("PROPFIND", _book(science, A), STATE, user=A, headers={"Depth": "0"}).status == 207
    finally:
        store = _store(dav)
        try:
            with store.write() as txn:
                GroupService(store).delete_in(txn, science)
        finally:
            store.close()
    assert f"group-{science.hex()}" not in _home(dav, A)


@pytest.mark.realclient
def test_vdirsyncer_discovers_and_syncs_the_group_book(dav: DavServer, maths: bytes, tmp_path: Path) -> None:
    """vdirsyncer discovers the group book from the home, syncs its cards, and picks up a new member."""
    program = require_program("vdirsyncer")
    conf = tmp_path / "vdirsyncer.conf"
    conf.write_text(f"""[general]
status_path = "{tmp_path}/status/"

[pair books]
a = "books_local"
b = "books_remote"
collections = ["from b"]
conflict_resolution = "b wins"

[storage books_local]
type = "filesystem"
path = "{tmp_path}/books/"
fileext = ".vcf"

[storage books_remote]
type = "carddav"
url = "{dav.base}/dav/{A}/"
username = "{A}"
password = "{PASSWORD}"
verify = "{dav.instance.cert}"
read_only = true
""")

    def run(*args: str) -> None:
        out = subprocess.run([program, "-c", str(conf), *args], input="y\n" * 8, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr

    run("discover")
    run("sync")
    local = tmp_path / "books" / f"group-{maths.hex()}"
    assert local.is_dir()
    texts = [p.read_text() for p in local.iterdir()]
    assert len(texts) == 3 and any("FN:Maths department" in t for t in texts)
    _put_group(dav, maths, MATHS, "Maths department", [A, CARL, DORA])
    try:
        run("sync")
        texts = [p.read_text() for p in local.iterdir()]
        assert len(texts) == 4 and any("FN:Dora Eck" in t for t in texts)
    finally:
        _put_group(dav, maths, MATHS, "Maths department", [A, CARL])


def test_storage_reserves_group_names(tmp_path: Path) -> None:
    """The storage plugin never creates a stored collection named group-…, and finds a group book only for members."""
    from schoolsuite.protocols.dav.groupbooks import GroupBooks

    from dav_helpers import make_account, new_key, open_backend

    backend = open_backend(tmp_path / "store", new_key())
    try:
        backend.storage.dynamic.append(GroupBooks(GroupService(backend.store)))
        anna, bert = make_account(backend.store, A, "Anna Berg"), make_account(backend.store, B, "Bert Chu")
        with backend.store.write() as txn:
            gid = GroupService(backend.store).put_in(txn, None, MATHS, "Maths", "", [anna]).id
        with pytest.raises(ValueError):
            backend.storage.create_collection(f"/{A}/group-{gid.hex()}/", props={"tag": "VADDRESSBOOK"})
        with pytest.raises(ValueError):
            backend.storage.create_collection(f"/{A}/group-x/")
        found = list(backend.storage.discover(f"/{A}/group-{gid.hex()}/", depth="1"))
        assert [getattr(f, "href", None) for f in found[1:]] == ["list.vcf", f"{anna.hex()}.vcf"]
        assert list(backend.storage.discover(f"/{B}/group-{gid.hex()}/")) == []
        assert list(backend.storage.discover(f"/{A}/group-zz/")) == []
        assert bert not in GroupService(backend.store).get(gid).members
    finally:
        backend.store.close()
