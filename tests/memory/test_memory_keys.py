"""The namespace path encoding that makes prefix search an index range (no broker, no database)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from service.store import memory_keys

parts = st.text(alphabet=st.sampled_from("ab/%_0.\u00e9\U0001f600"), min_size=1, max_size=4)
namespaces = st.lists(parts, min_size=1, max_size=4)


@given(namespaces)
def test_a_namespace_survives_the_round_trip(namespace: list[str]) -> None:
    """Whatever characters a namespace holds, it reads back exactly as it was put."""
    assert memory_keys.decode(memory_keys.encode(namespace)) == namespace


@given(namespaces, st.lists(parts, min_size=0, max_size=3))
def test_prefix_range_holds_exactly_the_namespaces_under_the_prefix(namespace: list[str], prefix: list[str]) -> None:
    """A stored path lies in a prefix's range if and only if the namespace starts with those whole parts."""
    path = memory_keys.encode(namespace)
    low = memory_keys.encode(prefix)
    high = memory_keys.upper_bound(low)
    in_range = low.encode() <= path.encode() and (high is None or path.encode() < high.encode())
    assert in_range == (namespace[: len(prefix)] == prefix)


@given(namespaces, st.integers(min_value=1, max_value=4))
def test_truncate_keeps_the_first_parts(namespace: list[str], depth: int) -> None:
    """Cutting a path to a depth gives the path of the namespace's first parts."""
    cut = memory_keys.truncate(memory_keys.encode(namespace), depth)
    assert memory_keys.decode(cut) == namespace[:depth]


def test_item_ids_differ_when_the_split_between_namespace_and_key_differs() -> None:
    """(["a"], "b/c") and (["a", "b"], "c") are different items."""
    first = memory_keys.item_id(memory_keys.encode(["a"]), "b/c")
    second = memory_keys.item_id(memory_keys.encode(["a", "b"]), "c")
    assert first != second and len(first) == 64
