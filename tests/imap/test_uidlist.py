"""UidList (sequence numbers over runs of uids) behaves exactly like a plain ascending array."""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right

from hypothesis import given, settings
from hypothesis import strategies as st

from schoolsuite.protocols.imap.uidlist import UidList


def test_runs_are_compact():
    """100,000 consecutive uids with a few gaps are a handful of runs, not an array."""
    uids = UidList(range(1, 100_001))
    for i in (50_000, 20_000, 10):
        del uids[i]
    assert len(uids) == 99_997 and len(uids._starts) == 4 and uids._flat is None
    assert uids.position(100_000) == 99_996 and uids.position(11) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=400), unique=True, max_size=150),
       st.lists(st.tuples(st.sampled_from(["del", "extend", "probe"]), st.integers(0, 500)), max_size=60))
def test_same_as_array(initial, ops):
    """Random deletes, appends and lookups give the same answers as array('I')."""
    model = array("I", sorted(initial))
    uids = UidList(model)
    for op, n in ops:
        if op == "del" and model:
            i = n % len(model)
            del model[i]
            del uids[i]
        elif op == "extend":
            new = [(model[-1] if model else 0) + 1 + k * (1 + n % 3) for k in range(n % 7)]
            model.extend(new)
            uids.extend(new)
        else:
            assert uids.bisect_left(n) == bisect_left(model, n)
            assert uids.bisect_right(n) == bisect_right(model, n)
            assert uids.position(n) == (model.index(n) if n in model else None)
        assert len(uids) == len(model) and list(uids) == list(model)
        if model:
            k = n % len(model)
            assert uids[k] == model[k] and uids[-1] == model[-1]
            assert uids.between(k // 2, k + 3) == list(model[k // 2 : k + 3])
