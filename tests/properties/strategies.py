"""Hypothesis strategies shared by the property tests."""

from __future__ import annotations

import itertools

from hypothesis import strategies as st

from streamhouse._codec import Codec

timestamps = st.integers(min_value=-(2**63), max_value=2**63 - 1)
fields = st.one_of(st.none(), st.binary(max_size=64), st.binary(min_size=4000, max_size=6000))
header_lists = st.one_of(
    st.none(),
    st.lists(st.tuples(st.text(max_size=8), st.binary(max_size=16)), max_size=3).map(tuple),
)
codecs = st.sampled_from(list(Codec))


@st.composite
def record_columns(draw: st.DrawFn, min_size: int = 1, max_size: int = 60) -> dict[str, list]:  # type: ignore[type-arg]
    """Columns of equal length: timestamps, keys, values, headers."""
    n = draw(st.integers(min_value=min_size, max_value=max_size))
    keyless = draw(st.booleans())
    return {
        "timestamps": draw(st.lists(timestamps, min_size=n, max_size=n)),
        "keys": [None] * n if keyless else draw(st.lists(fields, min_size=n, max_size=n)),
        "values": draw(st.lists(fields, min_size=n, max_size=n)),
        "headers": draw(st.one_of(st.none(), st.lists(header_lists, min_size=n, max_size=n))),
    }


def offset_gaps(n: int) -> st.SearchStrategy[list[int]]:
    """``n`` (>= 1) strictly increasing relative offsets, with gaps of any size (or none)."""
    steps = st.lists(
        st.one_of(st.just(1), st.integers(1, 5), st.integers(1, 2**20)),
        min_size=n - 1,
        max_size=n - 1,
    )
    return st.builds(
        lambda first, s: list(itertools.accumulate(s, initial=first)), st.integers(0, 1000), steps
    )


# (partition, record_count) of each object's segments
segment_plans = st.lists(
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(1, 50)),
        min_size=1,
        max_size=3,
        unique_by=lambda s: s[0],
    ),
    min_size=1,
    max_size=25,
)


# Arguments of one send() that the producer must refuse, each with a word the
# error names: a hostile caller's share of a batch that good callers share.
bad_send_arguments = st.one_of(
    st.integers(min_value=2**63, max_value=2**70).map(lambda t: ({"timestamp": t}, "timestamp")),
    st.integers(max_value=-1).map(lambda t: ({"timestamp": t}, "timestamp")),
    st.floats().map(lambda t: ({"timestamp": t}, "timestamp")),
    st.text(max_size=4).map(lambda v: ({"value": v}, "value")),
    st.binary(max_size=4).map(lambda k: ({"key": bytearray(k)}, "key")),
    st.integers()
    .map(lambda p: ({"partition": p}, "partition"))
    .filter(lambda a: not 0 <= a[0]["partition"] < 2),
    st.text(max_size=4).map(lambda h: ({"headers": [(h, h)]}, "header")),
    st.binary(max_size=2000, min_size=1001).map(lambda v: ({"value": v}, "max_record_bytes")),
)
