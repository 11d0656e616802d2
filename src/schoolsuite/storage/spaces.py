"""Record spaces: the byte after the account id in every record key.

One byte per sub-space (the way Stalwart prefixes its key spaces). The
storage layer keeps 0x01-0x0f; each protocol area takes its own range so that
one account's data of one kind is one contiguous key range.
"""

SPACE_COUNTER = 0x01  # the account's change counter (store.py)
SPACE_CONTENT = 0x02  # content meta: size, chunks, references (content.py)

# 0x10-0x1f mail (IMAP issue), 0x20-0x2f CalDAV/CardDAV, 0x30-0x3f files,
# 0x40-0x4f outbound queue and mail transport.

# Mail (storage/mail.py).
SPACE_MAIL_STATE = 0x10  # "s" -> next mailbox id, uidvalidity, usage; "k" -> keyword table
SPACE_MAILBOX = 0x11  # mailbox id -> mailbox record
SPACE_MAILBOX_NAME = 0x12  # H(name) -> mailbox id
SPACE_MAIL_INDEX = 0x13  # mailbox id + page -> packed uid/flags/modseq/date/size
SPACE_MESSAGE = 0x14  # mailbox id + uid -> content id + MIME structure
SPACE_MAIL_CHANGES = 0x15  # mailbox id + modseq -> uid, kind (changed/expunged)
SPACE_SUBSCRIPTION = 0x16  # H(name) -> subscribed name

# CalDAV/CardDAV (storage/dav.py).
SPACE_DAV_COLLECTION = 0x20  # H(collection path) -> collection record
SPACE_DAV_ITEM = 0x21  # H(path) + H(href) -> item record
SPACE_DAV_UID = 0x22  # H(path) + H(uid) -> H(href)
SPACE_DAV_LOG = 0x23  # H(path) + seq -> href (sync-collection change log)
SPACE_DAV_TOMB = 0x24  # H(path) + H(href) -> seq of the deletion

# Outbound queue and mail transport (storage/queue.py).
SPACE_QUEUE = 0x40  # queue id -> queued message entry (envelope, recipients, schedule)

# Files (storage/files.py).
SPACE_FILE_ENTRY = 0x30  # parent id + H(name) -> entry (name, kind, content id, size, times)
SPACE_FILE_NODE = 0x31  # entry id -> parent id + H(name)
SPACE_FILE_PROP = 0x32  # entry id + H(property name) -> dead property
SPACE_FILE_LOCK = 0x33  # H(lock token) -> lock
SPACE_FILE_META = 0x34  # "root" -> root entry; "usage" -> bytes used by files
