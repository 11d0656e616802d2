"""The storage layer: the only code that opens LMDB or touches key material.

It offers typed operations, each one transaction, and knows nothing of IMAP,
SMTP or HTTP. See store.py for the layout of the environment.
"""

from .crypto import MasterKeyError, SealError, load_master_key, write_master_key
from .errors import Conflict, CorruptRecord, NotFound, StoreError, StoreFullError, StoreOpenError
from .store import ReadTxn, Store, UserView, UserWrite, WriteTxn

__all__ = [
    "Conflict",
    "CorruptRecord",
    "MasterKeyError",
    "NotFound",
    "ReadTxn",
    "SealError",
    "Store",
    "StoreError",
    "StoreFullError",
    "StoreOpenError",
    "UserView",
    "UserWrite",
    "WriteTxn",
    "load_master_key",
    "write_master_key",
]
