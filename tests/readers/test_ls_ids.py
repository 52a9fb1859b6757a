"""Legacy Survey ID joins: packed keys and first-match lookup against a plain-dict oracle."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from astroembed.readers.legacysurvey import first_match, id_keys

ids = st.tuples(st.sampled_from([9010, 9011, 10000]), st.integers(0, 662173),
                st.integers(0, 5000))
rows = st.lists(st.one_of(ids, st.none()), max_size=30)


def _table(values, objid: str = "OBJID") -> pa.Table:
    cols = list(zip(*[(None, None, None) if v is None else v for v in values])) or [(), (), ()]
    return pa.table({"RELEASE": pa.array(cols[0], pa.int32()),
                     "BRICKID": pa.array(cols[1], pa.int32()),
                     objid: pa.array(cols[2], pa.int32())})


@settings(max_examples=200, deadline=None)
@given(left=rows, right=st.lists(st.one_of(ids, st.none()), max_size=30),
       shared=st.lists(ids, max_size=5))
def test_first_match_is_the_first_equal_row(left, right, shared):
    left, right = left + shared, shared[::-1] + right + shared
    lk, rk = id_keys(_table(left)), id_keys(_table(right, "BRICK_OBJID"))
    if lk is None or rk is None:  # a side with no usable IDs joins nothing
        assert all(v is None for v in left) or all(v is None for v in right)
        return
    first: dict[tuple, int] = {}
    for j, v in enumerate(right):
        if v is not None:
            first.setdefault(v, j)
    expected = [-1 if v is None else first.get(v, -1) for v in left]
    assert first_match(*lk, *rk).tolist() == expected


def test_ids_of_different_objects_never_collide():
    # Neighbouring values in each field: a packing that overlapped fields would merge two.
    values = [(r, b, o) for r in (9010, 9011) for b in (0, 1, 662173) for o in (0, 1, 4_194_303)]
    keys, valid = id_keys(_table(values))
    assert valid.all() and len(set(keys.tolist())) == len(values)


def test_missing_or_out_of_range_ids_do_not_join():
    t = _table([(9010, 5, 7), (9010, 5, 7)])
    assert id_keys(t.drop_columns(["BRICKID"])) is None
    bad = pa.table({"RELEASE": pa.array([9010, -1], pa.int32()),
                    "BRICKID": pa.array([5, 5], pa.int32()),
                    "OBJID": pa.array([7, 7], pa.int32())})
    keys, valid = id_keys(bad)
    assert valid.tolist() == [True, False]
    assert first_match(keys, valid, keys, valid).tolist() == [0, -1]
