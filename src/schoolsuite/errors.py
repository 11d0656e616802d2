"""The one exception family the command line turns into a one-line message."""

from __future__ import annotations


class UserError(Exception):
    """A problem the operator can fix (bad config, missing instance, taken port).

    The CLI prints ``schoolsuite: <message>`` on stderr and exits 2; the message
    must be one line and must make sense without a traceback.
    """
