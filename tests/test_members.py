"""Retired member ids (`zraft.node.members`): the marks a directory carries in CONFIG
entries, the ids a snapshot header records (today's field, the fallback for an earlier
release's snapshot, damage), and the hellos that say which members read the marks."""

from __future__ import annotations

import msgpack
import pytest

from tests.fakeclock import FakeClock
from zraft.core import Membership, SnapshotMeta
from zraft.node.admin import learn_snapshot_endpoints
from zraft.node.members import RETIRED_MARKS, Endpoints, decode_endpoints, retired_from_header
from zraft.node.upkeep import FEATURES_FRESH_S, Upkeep
from zraft.state.machine import MODEL
from zraft.wire.peer import Hello

DIRECTORY = {i: ["tcp://h:1", "tcp://h:2", ""] for i in ("n1", "n2", "n3", "n4")}


def test_a_header_with_retired_ids_gives_them_minus_members() -> None:
    header = {"endpoints": DIRECTORY, "retired": ["n4", "n3"]}
    assert retired_from_header(header, {"n1", "n2"}) == {"n3", "n4"}
    # An earlier release re-added an id: a member is never retired.
    assert retired_from_header(header, {"n1", "n2", "n3"}) == {"n4"}


def test_an_earlier_releases_header_retires_the_directory_ids_that_are_not_members() -> None:
    assert retired_from_header({"endpoints": DIRECTORY}, {"n1", "n2", "n3"}) == {"n4"}
    assert retired_from_header({}, {"n1"}) == frozenset()
    assert retired_from_header({"endpoints": "garbage"}, {"n1"}) == frozenset()


def test_a_damaged_retired_field_is_an_error_not_a_guess() -> None:
    for bad in ("n3", ["n3", 7], ["-bad"], [""], ["n" * 65], {"n3": 1}):
        found = retired_from_header({"endpoints": DIRECTORY, "retired": bad}, {"n1"})
        assert isinstance(found, str) and "retired ids" in found, bad


def test_retired_marks_travel_in_the_directory_and_stay() -> None:
    directory = Endpoints(
        [("n1", "tcp://h:1", "tcp://h:2", ""), ("n3", "tcp://h:5", "tcp://h:6", "")]
    )
    assert directory.retire("n3") and not directory.retire("n3")
    entries, retired = decode_endpoints(directory.encode())
    assert retired == {"n3"} and entries["n3"] == ("tcp://h:5", "tcp://h:6", "")
    other = Endpoints()
    other.merge(entries, retired)
    assert other.retired == {"n3"}
    other.merge(entries, ())  # a later entry of an earlier release: the mark stays
    assert other.retired == {"n3"}
    directory.unretire("n3")  # the removal was refused
    assert decode_endpoints(directory.encode())[1] == frozenset()


def test_an_earlier_releases_context_decodes_and_a_bad_mark_is_refused() -> None:
    old = msgpack.packb({"n1": ["tcp://h:1", "tcp://h:2", ""]})
    assert decode_endpoints(old) == ({"n1": ("tcp://h:1", "tcp://h:2", "")}, frozenset())
    for bad in (
        ["tcp://h:1", "tcp://h:2", "", "gone"],
        ["tcp://h:1", "tcp://h:2", "", "retired", 1],
    ):
        with pytest.raises(ValueError, match=r"n1|max_array_len"):
            decode_endpoints(msgpack.packb({"n1": bad}))


def test_a_feature_counts_while_each_member_keeps_saying_so() -> None:
    """`members_read`: every other member must have named the feature in a hello heard
    within `FEATURES_FRESH_S` (one restarted on an earlier release falls silent or names
    less); this node itself always counts."""
    clock = FakeClock()
    upkeep = Upkeep("n1", None, None, lambda _p, _f: True, list, clock=clock)  # type: ignore[arg-type]
    members = ["n1", "n2", "n3"]
    assert not upkeep.members_read(RETIRED_MARKS, members)  # nobody heard yet
    assert upkeep.members_read(RETIRED_MARKS, ["n1"])
    upkeep.heard(Hello("n2", "n1", (MODEL, RETIRED_MARKS)))
    upkeep.heard(Hello("n3", "n1", (MODEL,)))  # an earlier release
    assert upkeep.members_read(MODEL, members) and not upkeep.members_read(RETIRED_MARKS, members)
    upkeep.heard(Hello("n3", "n1", (MODEL, RETIRED_MARKS)))  # upgraded
    assert upkeep.members_read(RETIRED_MARKS, members)
    clock.advance(FEATURES_FRESH_S / 2)
    upkeep.heard(Hello("n2", "n1", (MODEL, RETIRED_MARKS)))
    clock.advance(FEATURES_FRESH_S / 2 + 0.1)  # n3 silent for longer than the window
    assert upkeep.members_read(RETIRED_MARKS, ["n1", "n2"])
    assert not upkeep.members_read(RETIRED_MARKS, members)


def test_a_damaged_retired_list_costs_only_itself() -> None:
    """A snapshot whose retired list cannot be read still gives the node its directory
    (how to reach every member); the damage is reported, nothing is guessed."""
    meta = SnapshotMeta(index=7, term=2, membership=Membership(voters=frozenset({"n1", "n2"})))
    endpoints = Endpoints()
    changed, problem = learn_snapshot_endpoints(
        endpoints, {"endpoints": DIRECTORY, "retired": "n3"}, meta
    )
    assert changed and set(endpoints.as_dict()) == set(DIRECTORY)
    assert problem is not None and "retired ids" in problem and endpoints.retired == set()
    changed, problem = learn_snapshot_endpoints(Endpoints(), {"endpoints": 5}, meta)
    assert not changed and problem is not None and "snapshot 7" in problem
