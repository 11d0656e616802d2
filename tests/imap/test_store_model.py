"""A hypothesis state machine: the mail store against a plain dict model of two mailboxes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from schoolsuite.services.accounts import AccountService
from schoolsuite.storage import Store, mail

import schoolsuite.services  # noqa: F401  (registers the mailbox initializer)

MASKS = st.integers(min_value=0, max_value=(1 << 5) - 1)
BOXES = st.sampled_from(["INBOX", "Archive"])


class MailModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.store = Store.open(Path(self.dir.name) / "data", os.urandom(32), map_size=1 << 28)
        accounts = AccountService(self.store)
        accounts.add("model@school.example", "correct horse battery")
        self.account = accounts.find_id("model@school.example")
        self.model: dict[str, dict[int, int]] = {"INBOX": {}, "Archive": {}}
        self.uidnext = {"INBOX": 1, "Archive": 1}
        self.sizes: dict[tuple[str, int], int] = {}

    def teardown(self) -> None:
        self.store.close()
        self.dir.cleanup()

    def _write(self, fn):  # type: ignore[no-untyped-def]
        with self.store.write() as txn:
            user = txn.user(self.account)
            return fn(user)

    @rule(name=BOXES, flags=MASKS, size=st.integers(min_value=1, max_value=300))
    def append(self, name: str, flags: int, size: int) -> None:
        """APPEND gives the next uid."""
        data = b"Subject: m\r\n\r\n" + b"x" * size

        def run(user):  # type: ignore[no-untyped-def]
            box = mail.find_mailbox(user, name)
            uid = mail.append(user, box, data, flags=flags)
            mail.save_mailbox(user, box)
            return uid

        uid = self._write(run)
        assert uid == self.uidnext[name]
        self.uidnext[name] += 1
        self.model[name][uid] = flags
        self.sizes[(name, uid)] = len(data)

    @rule(name=BOXES, pick=st.lists(st.integers(min_value=0, max_value=50), max_size=5),
          mode=st.sampled_from(["set", "add", "remove"]), mask=MASKS)
    def store_flags(self, name: str, pick: list[int], mode: str, mask: int) -> None:
        """STORE changes exactly the flags the mode says."""
        uids = sorted(self.model[name])
        chosen = sorted({uids[i % len(uids)] for i in pick}) if uids else []

        def run(user):  # type: ignore[no-untyped-def]
            box = mail.find_mailbox(user, name)
            changed, _ = mail.store_flags(user, box, chosen, mode, mask)
            mail.save_mailbox(user, box)
            return changed

        self._write(run)
        for uid in chosen:
            old = self.model[name][uid]
            self.model[name][uid] = mask if mode == "set" else (old | mask if mode == "add" else old & ~mask)

    @rule(name=BOXES)
    def expunge(self, name: str) -> None:
        """EXPUNGE removes exactly the \\Deleted messages."""
        def run(user):  # type: ignore[no-untyped-def]
            box = mail.find_mailbox(user, name)
            removed = mail.expunge(user, box)
            mail.save_mailbox(user, box)
            return removed

        removed = self._write(run)
        expected = sorted(u for u, f in self.model[name].items() if f & mail.DELETED)
        assert removed == expected
        for uid in removed:
            del self.model[name][uid]

    @rule(source=BOXES, move=st.booleans())
    def copy_all(self, source: str, move: bool) -> None:
        """COPY/MOVE of every message to the other mailbox keeps flags, in uid order."""
        target = "Archive" if source == "INBOX" else "INBOX"
        uids = sorted(self.model[source])

        def run(user):  # type: ignore[no-untyped-def]
            src, dst = mail.find_mailbox(user, source), mail.find_mailbox(user, target)
            pairs = (mail.move_messages if move else mail.copy_messages)(user, src, uids, dst)
            mail.save_mailbox(user, src)
            mail.save_mailbox(user, dst)
            return pairs

        pairs = self._write(run)
        assert [p[0] for p in pairs] == uids
        for old, new in pairs:
            assert new == self.uidnext[target]
            self.uidnext[target] += 1
            self.model[target][new] = self.model[source][old]
            self.sizes[(target, new)] = self.sizes[(source, old)]
        if move:
            for old in uids:
                del self.model[source][old]

    @invariant()
    def store_matches_model(self) -> None:
        with self.store.read() as txn:
            user = txn.user(self.account)
            total_bytes = 0
            for name, messages in self.model.items():
                box = mail.find_mailbox(user, name)
                index = mail.load_index(user, box.id)
                assert list(index.uids) == sorted(messages)
                assert list(index.flags) == [messages[u] for u in sorted(messages)]
                assert box.messages == len(messages) and box.uidnext == self.uidnext[name]
                assert box.unseen == sum(1 for f in messages.values() if not f & mail.SEEN)
                assert box.deleted == sum(1 for f in messages.values() if f & mail.DELETED)
                assert box.size == sum(self.sizes[(name, u)] for u in messages)
                total_bytes += box.size
                live = {c.uid for c in mail.changes_since(user, box.id, 0) if not c.expunged}
                assert live == set(messages)
            assert mail.usage(user) == (total_bytes, sum(len(m) for m in self.model.values()))


MailModel.TestCase.settings = settings(max_examples=25, stateful_step_count=25, deadline=None)
TestMailModel = MailModel.TestCase
TestMailModel.__doc__ = "The mail store behaves like the dict model under random APPEND/STORE/EXPUNGE/COPY/MOVE."
