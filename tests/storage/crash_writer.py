"""Child process of test_crash.py: writes to the store until killed.

    crash_writer.py records DATA_DIR MASTER_HEX ACCOUNT_HEX FIRST_INDEX
        In a loop, one write transaction per record: bump the change counter,
        store record FIRST_INDEX+n holding its index and the counter value
        (every 5th one spilled into chunks), then print "INDEX COUNTER" and
        flush. A line is printed only after the commit returned. Every other
        write is ``durable=False``: a killed process loses none of those either
        (the kernel still has them; only a power cut may undo the unsynced
        last ones), and the mix must never corrupt the store.

    crash_writer.py content DATA_DIR MASTER_HEX ACCOUNT_HEX
        Stream content through a ContentWriter, print its id after the
        batches committed, then wait to be killed without committing it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from schoolsuite.storage import content
from schoolsuite.storage.store import CHUNK_SIZE, INLINE_MAX, Store

MAIL = 0x10


def record_value(index: int, counter: int) -> bytes:
    """The value written for record ``index`` at change counter ``counter``."""
    body = json.dumps({"index": index, "counter": counter}).encode()
    padding = INLINE_MAX + 100 if index % 5 == 0 else 50
    return body + b"\n" + bytes([index % 251]) * padding


def record_key(index: int) -> bytes:
    return b"crash/%08d" % index


def main() -> None:
    mode, data_dir, master_hex, account_hex = sys.argv[1:5]
    account = bytes.fromhex(account_hex)
    store = Store.open(Path(data_dir), bytes.fromhex(master_hex), map_size=1 << 32)
    if mode == "records":
        index = int(sys.argv[5])
        while True:
            with store.write(durable=index % 2 == 0) as txn:
                user = txn.user(account)
                counter = user.bump_change()
                user.put(MAIL, record_key(index), record_value(index, counter))
            sys.stdout.write(f"{index} {counter}\n")
            sys.stdout.flush()
            index += 1
    elif mode == "content":
        writer = content.ContentWriter(store, account, batch_bytes=CHUNK_SIZE)
        for n in range(3):
            writer.write(bytes([n]) * CHUNK_SIZE)
        sys.stdout.write(writer.content_id.hex() + "\n")
        sys.stdout.flush()
        while True:
            writer.write(b"x" * 1000)
            time.sleep(0.01)


if __name__ == "__main__":
    main()
