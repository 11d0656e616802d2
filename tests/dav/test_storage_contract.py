"""Contract of the Radicale storage plugin over the sealed store (no server, no reactor)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from radicale import storage as radicale_storage

from schoolsuite.storage import dav as store_dav
from schoolsuite.storage import accounts as directory

from dav_helpers import Backend, event, make_account, new_key, open_backend, prepared, todo, vcard

A = "anna@school.example"
B = "bert@school.example"


@pytest.fixture
def key() -> bytes:
    return new_key()


@pytest.fixture
def backend(tmp_path: Path, key: bytes) -> Iterator[Backend]:
    b = open_backend(tmp_path / "data", key)
    make_account(b.store, A, "Anna Berg")
    make_account(b.store, B, "Bert Chu")
    yield b
    b.store.close()


def calendar(b: Backend, owner: str = A, name: str = "cal") -> radicale_storage.BaseCollection:
    coll, _, _ = b.storage.create_collection(f"/{owner}/{name}/", props={"tag": "VCALENDAR"})
    return coll


def discover(b: Backend, path: str, depth: str = "0") -> list:
    return list(b.storage.discover(path, depth))


def put(coll, href: str, text: str):  # type: ignore[no-untyped-def]
    return coll.upload(href, prepared(text, coll.path))


def test_home_exists_only_for_a_known_normalised_address(backend: Backend) -> None:
    """A home is discovered for an account's address, never for unknown or differently spelled ones."""
    assert [c.path for c in discover(backend, f"/{A}/")] == [A]
    assert discover(backend, "/nobody@school.example/") == []
    assert discover(backend, "/Anna@School.Example/") == []


def test_root_lists_no_accounts(backend: Backend) -> None:
    """PROPFIND depth 1 on the root never enumerates the accounts."""
    found = discover(backend, "/", "1")
    assert [c.path for c in found] == [""]


def test_default_collections_are_made_once(backend: Backend) -> None:
    """Defaults (calendar for events and tasks, address book) appear once; a deleted default stays deleted."""
    aid = backend.dav.account_id(A)
    assert backend.dav.write(aid, store_dav.make_default_collections) is True
    found = {c.path: c.get_meta("tag") for c in discover(backend, f"/{A}/", "1")}
    assert found[f"{A}/calendar"] == "VCALENDAR"
    assert found[f"{A}/contacts"] == "VADDRESSBOOK"
    assert "VTODO" in discover(backend, f"/{A}/calendar/")[0].get_meta("C:supported-calendar-component-set")
    discover(backend, f"/{A}/calendar/")[0].delete()
    assert backend.dav.write(aid, store_dav.make_default_collections) is False
    assert discover(backend, f"/{A}/calendar/") == []


def test_item_round_trip_with_etag_and_uid(backend: Backend) -> None:
    """An uploaded item comes back with the same text, its UID and a content ETag, alone or in a multiget."""
    coll = calendar(backend)
    text = event("e1")
    stored, old = put(coll, "e1.ics", text)
    assert old is None
    got, = discover(backend, f"/{A}/cal/e1.ics")
    assert got.serialize() == stored.serialize()
    assert got.uid == "e1" and got.etag == stored.etag and got.etag.startswith('"')
    assert got.collection.path == f"{A}/cal"
    multi = dict(coll.get_multi(["e1.ics", "missing.ics"]))
    assert multi["missing.ics"] is None and multi["e1.ics"].uid == "e1"
    assert [i.href for i in coll.get_all()] == ["e1.ics"]


def test_replace_returns_the_old_item(backend: Backend) -> None:
    """Uploading over an href returns the replaced item and changes the ETag."""
    coll = calendar(backend)
    first, _ = put(coll, "e1.ics", event("e1", summary="one"))
    second, old = put(coll, "e1.ics", event("e1", summary="two"))
    assert old is not None and old.etag == first.etag
    assert second.etag != first.etag
    assert len(list(coll.get_all())) == 1


def test_has_uid_follows_the_index(backend: Backend) -> None:
    """has_uid is true while an item with that UID exists, false after delete or UID change."""
    coll = calendar(backend)
    put(coll, "x.ics", event("u1"))
    assert coll.has_uid("u1") and not coll.has_uid("u2")
    put(coll, "x.ics", event("u2"))
    assert coll.has_uid("u2") and not coll.has_uid("u1")
    coll.delete("x.ics")
    assert not coll.has_uid("u2")


def test_ctag_changes_with_every_write_only(backend: Backend) -> None:
    """The collection ETag (CTag) changes on upload, delete and property change, not on reads."""
    coll = calendar(backend)
    tags = [discover(backend, f"/{A}/cal/")[0].etag]
    put(coll, "a.ics", event("a"))
    tags.append(discover(backend, f"/{A}/cal/")[0].etag)
    list(coll.get_all())
    assert discover(backend, f"/{A}/cal/")[0].etag == tags[-1]
    coll.delete("a.ics")
    tags.append(discover(backend, f"/{A}/cal/")[0].etag)
    discover(backend, f"/{A}/cal/")[0].set_meta({"tag": "VCALENDAR", "D:displayname": "Neu"})
    tags.append(discover(backend, f"/{A}/cal/")[0].etag)
    assert len(set(tags)) == 4
    assert discover(backend, f"/{A}/cal/")[0].get_meta("D:displayname") == "Neu"


def test_sync_initial_incremental_and_unchanged(backend: Backend) -> None:
    """sync-collection: everything first, then exactly what changed or was deleted, then nothing."""
    coll = calendar(backend)
    for n in range(5):
        put(coll, f"{n}.ics", event(f"u{n}"))
    token, hrefs = discover(backend, f"/{A}/cal/")[0].sync()
    assert sorted(hrefs) == [f"{n}.ics" for n in range(5)]
    put(coll, "1.ics", event("u1", summary="changed"))
    coll.delete("3.ics")
    put(coll, "9.ics", event("u9"))
    token2, hrefs = discover(backend, f"/{A}/cal/")[0].sync(token)
    assert sorted(hrefs) == ["1.ics", "3.ics", "9.ics"]
    token3, hrefs = discover(backend, f"/{A}/cal/")[0].sync(token2)
    assert token3 == token2 and list(hrefs) == []


@pytest.mark.parametrize("bad", ["garbage", "https://schoolsuite.invalid/ns/sync/abc-1",
                                 "https://schoolsuite.invalid/ns/sync/{inc}-999999",
                                 "https://schoolsuite.invalid/ns/sync/{inc}-x"])
def test_sync_refuses_foreign_or_future_tokens(backend: Backend, bad: str) -> None:
    """A token of another collection, from the future or malformed raises ValueError (valid-sync-token)."""
    coll = calendar(backend)
    put(coll, "a.ics", event("a"))
    token, _ = coll.sync()
    inc = token.rsplit("/", 1)[1].split("-")[0]
    with pytest.raises(ValueError):
        discover(backend, f"/{A}/cal/")[0].sync(bad.format(inc=inc))


def test_recreated_collection_refuses_old_tokens(backend: Backend) -> None:
    """Deleting and recreating a collection invalidates its old sync tokens."""
    coll = calendar(backend)
    put(coll, "a.ics", event("a"))
    token, _ = coll.sync()
    coll.delete()
    assert discover(backend, f"/{A}/cal/") == []
    coll = calendar(backend)
    assert list(coll.get_all()) == []
    with pytest.raises(ValueError):
        coll.sync(token)


def test_sync_tokens_survive_a_restart(tmp_path: Path, key: bytes) -> None:
    """After closing and reopening the store an old token still yields exactly the later changes."""
    b = open_backend(tmp_path / "data", key)
    make_account(b.store, A)
    coll = calendar(b)
    put(coll, "a.ics", event("a"))
    token, _ = coll.sync()
    b.store.close()
    b = open_backend(tmp_path / "data", key)
    coll = discover(b, f"/{A}/cal/")[0]
    put(coll, "b.ics", event("b"))
    _, hrefs = discover(b, f"/{A}/cal/")[0].sync(token)
    assert list(hrefs) == ["b.ics"]
    b.store.close()


def test_trimmed_tombstones_invalidate_old_tokens(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_TOMBSTONES the oldest deletions are forgotten; tokens before them are refused, later ones work."""
    monkeypatch.setattr(store_dav, "MAX_TOMBSTONES", 4)
    coll = calendar(backend)
    for n in range(10):
        put(coll, f"{n}.ics", event(f"u{n}"))
    old_token, _ = discover(backend, f"/{A}/cal/")[0].sync()
    for n in range(8):
        coll.delete(f"{n}.ics")
    recent, _ = discover(backend, f"/{A}/cal/")[0].sync()
    coll.delete("8.ics")
    with pytest.raises(ValueError):
        discover(backend, f"/{A}/cal/")[0].sync(old_token)
    _, hrefs = discover(backend, f"/{A}/cal/")[0].sync(recent)
    assert list(hrefs) == ["8.ics"]


def test_move_between_collections(backend: Backend) -> None:
    """MOVE takes the item (and its UID) out of one collection into another; both sync logs show it."""
    one, two = calendar(backend, name="one"), calendar(backend, name="two")
    put(one, "m.ics", event("moving"))
    t1, _ = discover(backend, f"/{A}/one/")[0].sync()
    t2, _ = discover(backend, f"/{A}/two/")[0].sync()
    item, = discover(backend, f"/{A}/one/m.ics")
    backend.storage.move(item, discover(backend, f"/{A}/two/")[0], "moved.ics")
    assert discover(backend, f"/{A}/one/m.ics") == []
    assert discover(backend, f"/{A}/two/moved.ics")[0].uid == "moving"
    assert not discover(backend, f"/{A}/one/")[0].has_uid("moving")
    assert discover(backend, f"/{A}/two/")[0].has_uid("moving")
    assert list(discover(backend, f"/{A}/one/")[0].sync(t1)[1]) == ["m.ics"]
    assert list(discover(backend, f"/{A}/two/")[0].sync(t2)[1]) == ["moved.ics"]


def test_whole_collection_put_replaces_contents(backend: Backend) -> None:
    """Creating a collection with items (a whole-calendar PUT) replaces what was there and reports it."""
    coll = calendar(backend)
    put(coll, "keep.ics", event("keep"))
    items = [prepared(event("keep"), f"{A}/cal"), prepared(event("new"), f"{A}/cal")]
    coll, replaced, new = backend.storage.create_collection(f"/{A}/cal/", items=items, props={"tag": "VCALENDAR"})
    assert list(replaced) == ["keep.ics"] and new == ["new.ics"]
    assert sorted(i.uid for i in coll.get_all()) == ["keep", "new"]


def test_accounts_are_isolated(backend: Backend) -> None:
    """The same collection path in two homes holds different items."""
    put(calendar(backend, A), "a.ics", event("only-anna"))
    coll_b = calendar(backend, B)
    assert list(coll_b.get_all()) == []
    assert discover(backend, f"/{B}/cal/a.ics") == []


def test_unicode_hrefs_and_uids(backend: Backend) -> None:
    """Non-ASCII hrefs and UIDs are stored and found as they were given."""
    coll = calendar(backend)
    href, uid = "Übung-äöü-日本.ics", "ünï-😀@schule"
    put(coll, href, event(uid, summary="Prüfung"))
    item, = discover(backend, f"/{A}/cal/{href}")
    assert item.href == href and item.uid == uid and "Prüfung" in item.serialize()
    assert coll.has_uid(uid)


def test_nothing_readable_in_the_store_file(backend: Backend) -> None:
    """Summaries, hrefs, UIDs and collection names never appear in the LMDB file in clear."""
    coll, _, _ = backend.storage.create_collection(f"/{A}/Geheimkalender/", props={
        "tag": "VCALENDAR", "D:displayname": "Elterngespraeche"})
    put(coll, "zeugnisvergabe-href.ics", event("zeugnis-uid-4711", summary="Vertraulich Zeugniskonferenz"))
    put(calendar(backend, A, "contacts-x"), "t.ics", todo("todo-uid-99", summary="Notenliste abgeben"))
    backend.store.close()
    raw = b"".join(p.read_bytes() for p in backend.path.iterdir())
    for secret in (b"Vertraulich", b"zeugnisvergabe-href", b"zeugnis-uid-4711", b"Geheimkalender",
                   b"Elterngespraeche", b"Notenliste", b"todo-uid-99", b"anna@school"):
        assert secret not in raw, secret


def test_collection_size_limit(tmp_path: Path, key: bytes) -> None:
    """A full collection refuses new items with errno 28 (Radicale answers 507) but accepts replacements."""
    b = open_backend(tmp_path / "data", key, max_items=2)
    make_account(b.store, A)
    coll = calendar(b)
    put(coll, "1.ics", event("1"))
    put(coll, "2.ics", event("2"))
    with pytest.raises(ValueError, match=r"\[Errno 28\]"):
        put(coll, "3.ics", event("3"))
    put(coll, "2.ics", event("2", summary="replaced"))
    b.store.close()


def test_vcards_in_an_address_book(backend: Backend) -> None:
    """An address book stores vCards and finds them by UID."""
    book, _, _ = backend.storage.create_collection(f"/{A}/book/", props={"tag": "VADDRESSBOOK"})
    put(book, "j.vcf", vcard("card-1"))
    item, = discover(backend, f"/{A}/book/j.vcf")
    assert item.name == "VCARD" and item.uid == "card-1" and "Jörg" in item.serialize()


def test_write_lock_is_per_user(backend: Backend) -> None:
    """A held write lock of one user blocks that user's next writer, never another user's."""
    order: list[str] = []
    with backend.storage.acquire_lock("w", A):
        other = threading.Thread(target=lambda: backend.storage.acquire_lock("w", B).__enter__() or order.append("B"))
        other.start()
        other.join(2)
        same = threading.Thread(target=lambda: (backend.storage.acquire_lock("w", A).__enter__(), order.append("A")))
        same.daemon = True
        same.start()
        same.join(0.2)
        assert order == ["B"]
    same.join(2)
    assert order == ["B", "A"]


def test_school_directory_lists_active_accounts(backend: Backend) -> None:
    """Every home has the read-only directory with one vCard per active account."""
    found = {c.path for c in discover(backend, f"/{A}/", "1")}
    assert f"{A}/school-directory" in found
    book = discover(backend, f"/{A}/school-directory/")[0]
    cards = {i.serialize() for i in book.get_all()}
    assert any("FN:Anna Berg" in c and f"EMAIL;TYPE=INTERNET,WORK:{A}" in c for c in cards)
    assert any("FN:Bert Chu" in c for c in cards)
    token, _ = book.sync()
    with backend.store.write() as txn:
        account = directory.find_account(txn, B)
        account.active = False
        directory.update_account(txn, account)
    book = discover(backend, f"/{A}/school-directory/")[0]
    assert not any("Bert" in i.serialize() for i in book.get_all())
    with backend.store.read() as txn:
        bert_href = f"{directory.find_account_id(txn, B).hex()}.vcf"
    new_token, changed = book.sync(token)
    assert new_token != token and list(changed) == [bert_href]
    assert list(book.sync(new_token)[1]) == []
    with pytest.raises(ValueError):
        book.sync(token.replace("directory-", "directory-0"))
    with pytest.raises(ValueError):
        put(book, "x.vcf", vcard("x"))


def _filter(xml: str):  # type: ignore[no-untyped-def]
    from xml.etree import ElementTree as ET

    return ET.fromstring(f'<CR:filter xmlns:CR="urn:ietf:params:xml:ns:carddav">{xml}</CR:filter>')


def test_card_prefilter_only_for_one_plain_text_match() -> None:
    """The address-book prefilter applies to one positive text-match on a plain property, nothing else."""
    from schoolsuite.protocols.dav.plugin_storage import card_prefilter

    one = '<CR:prop-filter name="FN"><CR:text-match match-type="contains">MüL</CR:text-match></CR:prop-filter>'
    assert card_prefilter([_filter(one)]) == ("mül", False)
    octet = one.replace('match-type="contains"', 'collation="i;octet"')
    assert card_prefilter([_filter(octet)]) == ("MüL", True)
    for refused in (one.replace('"FN"', '"N"'), one.replace("<CR:text-match", '<CR:text-match negate-condition="yes"'),
                    one + one, '<CR:prop-filter name="FN"><CR:is-not-defined/></CR:prop-filter>'):
        assert card_prefilter([_filter(refused)]) is None, refused


def test_card_prefilter_sees_through_folding_and_escapes() -> None:
    """A needle split by line folding or written with vCard escapes is still a candidate; others are dropped."""
    from schoolsuite.protocols.dav.plugin_storage import may_contain

    card = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Schmidt\\, Anna-Maria von der Lin\r\n de\r\nEND:VCARD\r\n"
    assert may_contain(card, "schmidt, anna-maria von der linde", False)
    assert not may_contain(card, "müller", False)
    assert may_contain("BEGIN:VCARD\r\nNOTE;ENCODING=b:bXVsbGVy\r\nEND:VCARD\r\n", "müller", False)


def test_address_book_text_query_finds_the_same_cards(backend: Backend) -> None:
    """get_filtered with the prefilter yields every card Radicale's full filter accepts."""
    from radicale.app.report import test_filter

    book, _, _ = backend.storage.create_collection(f"/{A}/book/", props={"tag": "VADDRESSBOOK"})
    names = ["Jörg Müller", "Anna Müllerová", "Bert Chu", "MÜLLER\\, Karl", "Eva Schmidt"]
    for n, name in enumerate(names):
        put(book, f"{n}.vcf", vcard(f"c{n}", name))
    flt = _filter('<CR:prop-filter name="FN"><CR:text-match match-type="contains">müller</CR:text-match>'
                  '</CR:prop-filter>')
    candidates = list(discover(backend, f"/{A}/book/")[0].get_filtered([flt]))
    assert len(candidates) < len(names)
    matched = {item.uid for item, _ in candidates if test_filter("VADDRESSBOOK", item, flt)}
    everything = {item.uid for item in book.get_all() if test_filter("VADDRESSBOOK", item, flt)}
    assert matched == everything == {"c0", "c1", "c3"}


def test_radicale_app_and_sharing_share_one_storage(backend: Backend) -> None:
    """Radicale's app and its sharing module get the same storage object (one set of LMDB handles)."""
    from types import SimpleNamespace

    from schoolsuite.config import DavConfig
    from schoolsuite.protocols.dav.app import build_application

    services = SimpleNamespace(store=backend.store, reactor=None, auth=None)
    middleware, storage = build_application(services, DavConfig())
    app = middleware.app
    assert app._storage is storage
    assert app._sharing._storage is storage


def test_internal_records_are_not_collections(backend: Backend) -> None:
    """The marker of made defaults is never discovered or listed as a collection."""
    aid = backend.dav.account_id(A)
    backend.dav.write(aid, store_dav.make_default_collections)
    assert discover(backend, f"/{A}/\x00defaults/") == []
    assert not any("\x00" in c.path for c in discover(backend, f"/{A}/", "1"))


def test_ctag_and_sync_token_read_no_items(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CTag and the current sync token come from the collection record alone (O(1), no item read)."""
    coll = calendar(backend)
    for n in range(3):
        put(coll, f"{n}.ics", event(f"u{n}"))
    fresh = discover(backend, f"/{A}/cal/")[0]

    def forbidden(*args: object) -> None:
        raise AssertionError("items were read")

    monkeypatch.setattr(store_dav, "all_items", forbidden)
    token, _ = fresh.sync()
    assert token.endswith(fresh.etag.strip('"').split("-", 1)[1]) and fresh.has_uid("u1")
