"""/files/ under concurrent clients: no lost or mixed-up content, each user isolated (bounded load)."""

from __future__ import annotations

import hashlib
import os
import threading
from urllib.parse import quote

from webdav_helpers import Dav, FilesServer


def test_parallel_clients_keep_content_apart(files_server: FilesServer, unique: str) -> None:
    """8 clients of 2 users PUT, GET, MOVE and PROPFIND at once (20 rounds each); every byte lands where it should."""
    users = ["alice@school.example", "carol@school.example"]
    for user in users:
        assert files_server.client(user).mkcol(unique).status == 201
    errors: list[str] = []

    def worker(n: int) -> None:
        dav: Dav = files_server.client(users[n % 2])
        for i in range(20):
            data = os.urandom(1000 + (n * 7919 + i * 104729) % 400_000)
            name = f"{unique}/w{n}-{i}.bin"
            if dav.put(name, data).status != 201:
                errors.append(f"put {name}")
                continue
            got = dav.get(name)
            if hashlib.sha256(got.body).digest() != hashlib.sha256(data).digest():
                errors.append(f"content {name}")
            if i % 5 == 0:
                dest = dav.home(f"{unique}/moved-{n}-{i}.bin")
                if dav.request("MOVE", name, headers={"Destination": dest}).status != 201:
                    errors.append(f"move {name}")
            if dav.propfind(unique, "1").status != 207:
                errors.append("propfind")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:10]
    for k, user in enumerate(users):
        hrefs = files_server.client(user).propfind(unique, "1").hrefs()[1:]
        assert len(hrefs) == 4 * 20  # 4 workers per user, 20 files each (some moved, none lost)
        assert all(h.startswith(f"/files/{user}/") for h in hrefs)
        workers = {int(h.rsplit("/", 1)[-1].split("-")[1 if "moved" in h else 0].lstrip("w")) for h in hrefs}
        assert workers == {n for n in range(8) if n % 2 == k}  # only this user's workers' files


def test_move_to_unicode_destination(alice: Dav, unique: str) -> None:
    """MOVE to a percent-encoded UTF-8 Destination (as Windows and macOS send it) gives that exact name."""
    alice.mkcol(unique)
    alice.put(f"{unique}/plain.txt", b"u")
    name = "Prüfung 2024 – Ergebnisse ✓.txt"
    dest = alice.home(f"{unique}/{quote(name)}")
    assert alice.request("MOVE", f"{unique}/plain.txt", headers={"Destination": dest}).status == 201
    assert alice.get(f"{unique}/{quote(name)}").body == b"u"
    assert any(quote(name) in h for h in alice.propfind(unique, "1").hrefs())
