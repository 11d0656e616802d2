"""Backup and restore of the store.

A backup is LMDB's own consistent copy of the environment (compacted: free
pages left out), taken in one read transaction, so it can run while the
server writes: it holds exactly the transactions committed before it began.
It is as sealed as the store (every value is sealed under keys that only the
master key opens) and never contains the master key: keep ``secrets/`` apart.

Layout of a backup directory: ``data.mdb`` (the copy) and
``schoolsuite-backup.json`` (format, time, size, SHA-256 of data.mdb).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..storage import Store
from ..storage.store import FORMAT_VERSION

MANIFEST = "schoolsuite-backup.json"
DATA = "data.mdb"
BACKUP_FORMAT = 1


class BackupError(UserError):
    """A backup or restore that cannot be done (one line for the operator)."""


@dataclass(frozen=True)
class BackupInfo:
    path: Path
    size: int
    sha256: str
    seconds: float


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def backup(store: Store, dest: Path) -> BackupInfo:
    """Copy the running store into the new (or empty) directory ``dest``."""
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupError(f"{dest} exists and is not an empty directory")
    started = time.monotonic()
    try:
        dest.mkdir(mode=0o700, parents=True, exist_ok=True)
        store.copy_to(dest, compact=True)
        data = dest / DATA
        os.chmod(data, 0o600)
        size, digest = data.stat().st_size, _sha256(data)
        manifest = {"format": BACKUP_FORMAT, "store_format": FORMAT_VERSION, "created": time.time(),
                    "bytes": size, "sha256": digest}
        (dest / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        _fsync_dir(dest)
    except OSError as exc:
        raise BackupError(f"cannot write the backup to {dest}: {exc.strerror or exc}") from None
    return BackupInfo(dest, size, digest, time.monotonic() - started)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_backup(src: Path) -> dict[str, object]:
    """The manifest of a complete, intact backup; BackupError otherwise."""
    src = Path(src)
    try:
        manifest = json.loads((src / MANIFEST).read_text())
    except (OSError, ValueError):
        raise BackupError(f"{src} is not a schoolsuite backup (no readable {MANIFEST})") from None
    if manifest.get("format") != BACKUP_FORMAT or manifest.get("store_format") != FORMAT_VERSION:
        raise BackupError(f"backup {src} has a format this version cannot restore")
    data = src / DATA
    if not data.is_file() or data.stat().st_size != manifest.get("bytes") or _sha256(data) != manifest.get("sha256"):
        raise BackupError(f"backup {src} is damaged: {DATA} does not match its manifest")
    return manifest


def _same_owner(staging: Path, like: Path) -> None:
    """Run as root (restore under systemd), give the restored store to the owner of the
    store it replaces, so that the unprivileged service can open it."""
    if os.geteuid() != 0:
        return
    owner = like.stat()
    for path in (staging, staging / DATA):
        os.chown(path, owner.st_uid, owner.st_gid)


def store_in_use(data_dir: Path) -> bool:
    """Whether a process has the store open (without opening it).

    Every process that opens an LMDB environment holds a shared lock on the
    first byte of ``lock.mdb`` for as long as it has it open; an exclusive
    try-lock on that byte therefore fails exactly when another process uses it.
    """
    try:
        fd = os.open(Path(data_dir) / "lock.mdb", os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
    except OSError:
        return True
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, 0)
        return False
    finally:
        os.close(fd)


def restore(src: Path, data_dir: Path, master_key: bytes, map_size: int, *, replace: bool = False) -> Path | None:
    """Bring backup ``src`` back as the store in ``data_dir``.

    ``data_dir`` must hold no store, unless ``replace``: then the old one is
    kept beside it as ``DATA_DIR.before-restore-<time>`` (returned). The copy
    is opened with the master key before it takes the store's place, so a
    wrong key or a damaged file leaves ``data_dir`` untouched. Stop the
    server first.
    """
    check_backup(src)
    data_dir = Path(data_dir)
    if store_in_use(data_dir):
        raise BackupError(f"the store in {data_dir} is open (is the server running?); stop it before restoring")
    kept = None
    occupied = data_dir.exists() and any(p.name != "lock.mdb" for p in data_dir.iterdir())
    if occupied and not replace:
        raise BackupError(f"{data_dir} holds a store already; stop the server and use --replace "
                          "(the old store is kept beside it)")
    staging = data_dir.parent / f".{data_dir.name}.restoring"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(mode=0o700, parents=True)
        shutil.copyfile(src / DATA, staging / DATA)
        os.chmod(staging / DATA, 0o600)
        with open(staging / DATA, "rb+") as fh:
            os.fsync(fh.fileno())
        Store.open(staging, master_key, map_size=map_size).close()  # MasterKeyError if the key differs
        (staging / "lock.mdb").unlink(missing_ok=True)
        _same_owner(staging, data_dir if data_dir.exists() else data_dir.parent)
        if occupied:
            kept = data_dir.parent / f"{data_dir.name}.before-restore-{time.strftime('%Y%m%dT%H%M%S')}"
            os.replace(data_dir, kept)
        elif data_dir.exists():
            shutil.rmtree(data_dir)
        os.replace(staging, data_dir)
        _fsync_dir(data_dir.parent)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise BackupError(f"cannot restore into {data_dir}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return kept
