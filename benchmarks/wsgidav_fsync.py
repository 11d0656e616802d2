#!/usr/bin/env python3
"""Stock WsgiDAV whose filesystem provider makes a PUT durable before it answers.

    python benchmarks/wsgidav_fsync.py --config wsgidav.yaml

For ``webdav_vs_wsgidav.py --stock-fsync``: the same ``wsgidav`` server, but a
file written by PUT is fsync'd (and a new file's directory too) when WsgiDAV
closes it, before the 201/204 goes out, as schoolsuite commits before it
answers. Everything else is stock.
"""

from __future__ import annotations

import os
from typing import Any

from wsgidav import fs_dav_provider
from wsgidav.server.server_cli import run


class _SyncedOnClose:
    """The provider's file object; close() flushes, fsyncs the file and its directory."""

    def __init__(self, f: Any, path: str) -> None:
        self._f = f
        self._path = path

    def write(self, data: bytes) -> int:
        return self._f.write(data)

    def close(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        fd = os.open(os.path.dirname(self._path), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


_begin_write = fs_dav_provider.FileResource.begin_write


def _synced_begin_write(self: Any, *, content_type: str | None = None) -> _SyncedOnClose:
    return _SyncedOnClose(_begin_write(self, content_type=content_type), self._file_path)


fs_dav_provider.FileResource.begin_write = _synced_begin_write  # type: ignore[method-assign]

if __name__ == "__main__":
    run()
