"""The ascending uid list behind sequence numbers, stored as runs of consecutive uids.

A mailbox's uids are mostly long runs (1..n with a few gaps where messages
were expunged), so a session that has a 100,000-message mailbox selected keeps
a handful of (start, length) pairs instead of 400 KB of uids. When expunges
have cut the list into many short runs it switches to a plain array, which is
never larger than the array it replaces. Position ``i`` is sequence number
``i + 1`` (RFC 3501 §2.3.1.2).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator


class UidList:
    """Ascending unique uids with sequence-number access."""

    __slots__ = ("_starts", "_lens", "_before", "_flat", "_n")

    def __init__(self, uids: Iterable[int] = ()) -> None:
        self._starts = array("I")
        self._lens = array("I")
        self._before = array("Q")  # how many uids precede each run
        self._flat: array | None = None
        self._n = 0
        self.extend(uids)

    # -- reading -----------------------------------------------------------

    def __len__(self) -> int:
        return self._n

    def __bool__(self) -> bool:
        return self._n > 0

    def __iter__(self) -> Iterator[int]:
        if self._flat is not None:
            yield from self._flat
            return
        for start, length in zip(self._starts, self._lens):
            yield from range(start, start + length)

    def _run_of_position(self, i: int) -> int:
        return bisect_right(self._before, i) - 1

    def __getitem__(self, index: int | slice) -> int | list[int]:  # type: ignore[override]
        if isinstance(index, slice):
            start, stop, step = index.indices(self._n)
            if step != 1:
                return [self[i] for i in range(start, stop, step)]  # type: ignore[misc]
            return self.between(start, stop)
        if index < 0:
            index += self._n
        if not 0 <= index < self._n:
            raise IndexError("uid list index out of range")
        if self._flat is not None:
            return self._flat[index]
        r = self._run_of_position(index)
        return self._starts[r] + index - self._before[r]

    def between(self, lo: int, hi: int) -> list[int]:
        """The uids at positions [lo, hi)."""
        lo, hi = max(lo, 0), min(hi, self._n)
        if lo >= hi:
            return []
        if self._flat is not None:
            return list(self._flat[lo:hi])
        out: list[int] = []
        r = self._run_of_position(lo)
        pos = lo
        while pos < hi:
            offset = pos - self._before[r]
            take = min(self._lens[r] - offset, hi - pos)
            first = self._starts[r] + offset
            out.extend(range(first, first + take))
            pos += take
            r += 1
        return out

    def bisect_left(self, uid: int) -> int:
        """Position of the first uid >= ``uid``."""
        if self._flat is not None:
            return bisect_left(self._flat, uid)
        r = bisect_right(self._starts, uid) - 1
        if r < 0:
            return 0
        offset = uid - self._starts[r]
        if offset < self._lens[r]:
            return self._before[r] + offset
        return self._before[r] + self._lens[r]

    def bisect_right(self, uid: int) -> int:
        """Position after the last uid <= ``uid``."""
        return self.bisect_left(uid + 1)

    def position(self, uid: int) -> int | None:
        """The position of ``uid`` (sequence number - 1), or None."""
        i = self.bisect_left(uid)
        return i if i < self._n and self[i] == uid else None

    def last(self) -> int:
        return self[-1] if self._n else 0  # type: ignore[return-value]

    # -- changing ------------------------------------------------------------

    def extend(self, uids: Iterable[int]) -> None:
        """Append uids greater than the last one, ascending."""
        last = self.last()
        for uid in uids:
            if uid <= last:
                raise ValueError("uids must ascend")
            last = uid
            self._n += 1
            if self._flat is not None:
                self._flat.append(uid)
            elif self._starts and self._starts[-1] + self._lens[-1] == uid:
                self._lens[-1] += 1
            else:
                self._starts.append(uid)
                self._lens.append(1)
                self._before.append(self._n - 1)
        self._maybe_flatten()

    def __delitem__(self, index: int) -> None:
        if index < 0:
            index += self._n
        if not 0 <= index < self._n:
            raise IndexError("uid list index out of range")
        self._n -= 1
        if self._flat is not None:
            del self._flat[index]
            return
        r = self._run_of_position(index)
        offset = index - self._before[r]
        start, length = self._starts[r], self._lens[r]
        later = r + 1  # the runs after this one move one position down
        if length == 1:
            del self._starts[r], self._lens[r], self._before[r]
            later = r
        elif offset == 0:
            self._starts[r] = start + 1
            self._lens[r] = length - 1
        elif offset == length - 1:
            self._lens[r] = length - 1
        else:  # split the run in two
            self._lens[r] = offset
            self._starts.insert(r + 1, start + offset + 1)
            self._lens.insert(r + 1, length - offset - 1)
            self._before.insert(r + 1, self._before[r] + offset + 1)
        for k in range(later, len(self._before)):
            self._before[k] -= 1
        self._maybe_flatten()

    def _maybe_flatten(self) -> None:
        # Runs cost 16 bytes each, a flat uid 4: beyond n/4 runs the array is smaller.
        if self._flat is None and len(self._starts) > 64 and len(self._starts) * 4 > self._n:
            self._flat = array("I", iter(self))
            self._starts, self._lens, self._before = array("I"), array("I"), array("Q")
