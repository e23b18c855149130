"""A Hypothesis state machine over group membership, against the real store
transactions, on SQLite and on PostgreSQL.

Members join, heartbeat (releasing what they were told to give up, or not
yet), leave, crash (stop heartbeating), and commit any partition, whether
they own it, were fenced or are long dead; the database's clock moves
(``clock_offset``, whole seconds, so that the few milliseconds the test
itself takes never tip a session over), and a second subscribed topic
appears and goes (partitions come and go). After every step:

- at most one owner per partition, in the store (``describe_group_members``)
  and in what the live members were last told;
- a commit is accepted exactly when the model says the member is live at its
  epoch and was told it owns the partition (a refused one wrote nothing);

and the ``settle`` rule checks that once the clock passes every dead
member's session and the live members heartbeat until nothing moves, every
partition is owned by a live member and the counts differ by at most one.
"""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio.from_thread
import attrs
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from streamhouse import (
    CommitFailedError,
    MetadataStore,
    PostgresMetadataStore,
    SQLiteMetadataStore,
    TopicPartition,
)
from streamhouse._metadata.groups import GroupAssignment, HeartbeatRequest, MemberRef

from ..helpers import drop_schema

SESSION = 10
TOPICS = ("t", "u")
NAMES = ("a", "b", "c", "d")
GROUP = "g"


@attrs.define
class Member:
    """What one member process knows: its id, epoch, last answer, last beat."""

    member_id: str
    epoch: int = 0  # 0: not in the group (never joined, left, or fenced)
    owned: frozenset[TopicPartition] = frozenset()
    revoke: frozenset[TopicPartition] = frozenset()
    last_beat: int = 0  # by the model's clock
    crashed: bool = False


StoreFactory = Callable[[], contextlib.AbstractContextManager[MetadataStore]]


class GroupMachine(RuleBasedStateMachine):
    make_store: StoreFactory

    def __init__(self) -> None:
        super().__init__()
        self._stack = contextlib.ExitStack()
        self.portal = self._stack.enter_context(anyio.from_thread.start_blocking_portal("trio"))
        self.store = self._stack.enter_context(self.make_store())
        self.clock = 0
        self.members: dict[str, Member] = {}
        self.u_exists = False

    def teardown(self) -> None:
        with contextlib.suppress(Exception):
            self.portal.call(self.store.aclose)
        self._stack.close()

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self.portal.call(lambda: fn(*args, **kwargs))

    # -- the model ------------------------------------------------------------

    def live(self, m: Member) -> bool:
        """In the group by the model: joined and its session not run out."""
        return m.epoch > 0 and self.clock - m.last_beat < SESSION

    def beat(self, m: Member, released: frozenset[TopicPartition]) -> GroupAssignment:
        request = HeartbeatRequest(m.member_id, m.epoch, TOPICS, float(SESSION), None, released)
        was_live = m.epoch == 0 or self.live(m)
        answer: GroupAssignment = self.call(self.store.heartbeat, GROUP, request)
        assert answer.fenced == (not was_live), (answer, m, self.clock)
        if answer.fenced:
            m.epoch, m.owned, m.revoke = 0, frozenset(), frozenset()
        else:
            assert m.epoch in (0, answer.epoch)
            assert answer.revoke <= answer.owned
            # What a member owns only grows by what it was not told to give up.
            m.epoch, m.owned, m.revoke, m.last_beat = (
                answer.epoch, answer.owned, answer.revoke, self.clock,
            )  # fmt: skip
        return answer

    # -- rules ----------------------------------------------------------------

    @initialize(partitions=st.integers(1, 6))
    def make_topic(self, partitions: int) -> None:
        self.call(self.store.create_topic, "t", partitions)

    @rule(name=st.sampled_from(NAMES))
    def join(self, name: str) -> None:
        m = self.members.get(name)
        if m is None or m.crashed or m.epoch == 0:
            # A new process (after a crash) has a new member id.
            m = self.members[name] = Member(f"{name}-{uuid.uuid4().hex[:6]}")
            self.beat(m, frozenset())

    @rule(name=st.sampled_from(NAMES), release=st.booleans())
    def heartbeat(self, name: str, release: bool) -> None:
        m = self.members.get(name)
        if m is not None and not m.crashed and m.epoch > 0:
            self.beat(m, m.revoke if release else frozenset())

    @rule(name=st.sampled_from(NAMES))
    def leave(self, name: str) -> None:
        m = self.members.get(name)
        if m is not None and not m.crashed and m.epoch > 0:
            self.call(self.store.leave_group, GROUP, MemberRef(m.member_id, m.epoch))
            m.epoch, m.owned, m.revoke = 0, frozenset(), frozenset()

    @rule(name=st.sampled_from(NAMES))
    def crash(self, name: str) -> None:
        m = self.members.get(name)
        if m is not None:
            m.crashed = True

    @rule(seconds=st.sampled_from([1, 3, SESSION + 1]))
    def advance_clock(self, seconds: int) -> None:
        self.clock += seconds
        self.store.clock_offset = float(self.clock)  # type: ignore[attr-defined]

    @rule()
    def toggle_second_topic(self) -> None:
        if self.u_exists:
            self.call(self.store.delete_topic, "u")
        else:
            self.call(self.store.create_topic, "u", 2)
        self.u_exists = not self.u_exists

    @rule(name=st.sampled_from(NAMES), partition=st.integers(0, 5), offset=st.integers(0, 99))
    def commit(self, name: str, partition: int, offset: int) -> None:
        m = self.members.get(name)
        partitions = self.call(self.store.partition_states, ["t"])
        if m is None or partition >= len(partitions):
            return
        tp = TopicPartition("t", partition)
        before = self.call(self.store.fetch_offsets, GROUP)
        expected = self.live(m) and tp in m.owned
        try:
            self.call(
                self.store.commit_offsets, GROUP, {tp: offset},
                member=MemberRef(m.member_id, m.epoch),
            )  # fmt: skip
        except CommitFailedError:
            assert not expected, f"{m} was refused {tp} at clock {self.clock}"
            assert self.call(self.store.fetch_offsets, GROUP) == before
        else:
            assert expected, f"{m} committed {tp} at clock {self.clock} without owning it"

    @rule()
    def settle(self) -> None:
        """Heartbeat the live members past every session, then until stable."""
        for _ in range(4):  # 4 x 3 s > SESSION: every silent member expires
            self.advance_clock(3)
            self.round()
        for _ in range(6):
            if not self.round():
                break
        alive = [m for m in self.members.values() if not m.crashed and m.epoch > 0]
        if not alive:
            return
        states = self.call(self.store.partition_states, list(TOPICS))
        subscribed = {TopicPartition(s.topic, s.partition) for s in states}
        owned = [m.owned for m in alive]
        assert frozenset().union(*owned) == subscribed
        counts = [len(o) for o in owned]
        assert max(counts) - min(counts) <= 1, counts
        assert all(not m.revoke for m in alive)

    def round(self) -> bool:
        moved = False
        for m in list(self.members.values()):
            if not m.crashed and m.epoch > 0:
                owned, revoke = m.owned, m.revoke
                self.beat(m, m.revoke)
                moved |= bool(revoke or m.revoke) or owned != m.owned
        return moved

    # -- invariants -------------------------------------------------------------

    @invariant()
    def one_owner_per_partition(self) -> None:
        if not hasattr(self, "store") or not self.call(self.store.list_topics):
            return
        members = self.call(self.store.describe_group_members, GROUP)
        seen: set[TopicPartition] = set()
        for info in members:
            assert not (seen & info.assignment), f"two owners of {seen & info.assignment}"
            seen |= info.assignment
        told: set[TopicPartition] = set()
        for m in self.members.values():
            if self.live(m):
                assert not (told & m.owned), f"two live members told they own {told & m.owned}"
                told |= m.owned


@contextlib.contextmanager
def _sqlite_store() -> Iterator[MetadataStore]:
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteMetadataStore(Path(tmp) / "meta.db", synchronous="OFF")
        yield store


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_group_membership_keeps_its_promises(kind: str, request: pytest.FixtureRequest) -> None:
    """One owner per partition, commits only by owners at their epoch, balance once settled."""
    if kind == "sqlite":
        factory: StoreFactory = _sqlite_store
    else:
        url: str = request.getfixturevalue("postgres_url")

        @contextlib.contextmanager
        def factory() -> Iterator[MetadataStore]:
            schema = f"g_{uuid.uuid4().hex[:12]}"
            try:
                yield PostgresMetadataStore(url, schema=schema)
            finally:
                drop_schema(url, schema)

    machine = type("Machine", (GroupMachine,), {"make_store": staticmethod(factory)})
    examples = 40 if kind == "sqlite" else 15
    run_state_machine_as_test(
        machine,
        settings=settings(max_examples=examples, stateful_step_count=30, deadline=None),
    )
