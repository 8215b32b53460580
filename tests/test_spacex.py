"""Space exchange: members find exactly their shared spaces; strangers learn nothing."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2psync.codec import content_id
from p2psync.errors import ProtocolError
from p2psync.sync import messages as m
from p2psync.sync.spacex import (
    SpaceExchange,
    exchange_key,
    padded_size,
    run_exchange,
    space_token,
)

A, B, C = (bytes([i]) * 32 for i in (1, 2, 3))
SPACES = {f"space{i}.abc{i}": exchange_key(bytes([i + 100]) * 32, f"space{i}.abc{i}")
          for i in range(40)}
NAMES = sorted(SPACES)


def keys(names: list[str]) -> dict[str, bytes]:
    return {n: SPACES[n] for n in names}


@settings(max_examples=60, deadline=None)
@given(st.sets(st.sampled_from(NAMES)), st.sets(st.sampled_from(NAMES)))
def test_members_find_exactly_their_shared_spaces(mine: set[str], theirs: set[str]) -> None:
    t = run_exchange(SpaceExchange(A, B, keys(sorted(mine))),
                     SpaceExchange(B, A, keys(sorted(theirs))))
    assert t.shared_a == t.shared_b == frozenset(mine & theirs)


def _stranger_view(member_spaces: list[str], seed: int = 0) -> list[bytes]:
    """Bytes a stranger (holding other spaces' keys) receives from a member."""
    rng = random.Random(seed)
    stranger = SpaceExchange(C, A, {"other.x": os.urandom(32)})
    member = SpaceExchange(A, C, keys(member_spaces), random_bytes=rng.randbytes)
    t = run_exchange(stranger, member)
    assert t.shared_a == frozenset() and t.shared_b == frozenset()
    return t.received_by_a


def test_stranger_learns_no_ids_and_only_the_padding_bucket() -> None:
    views = {n: _stranger_view(NAMES[:n]) for n in (0, 1, 5, 16, 17, 40)}
    sizes = {n: sum(len(x) for x in v) for n, v in views.items()}
    assert sizes[0] == sizes[1] == sizes[5] == sizes[16]
    assert sizes[17] == sizes[40] > sizes[16]  # next bucket (64): only the bucket leaks
    raw = b"".join(b"".join(v) for v in views.values())
    for name, key in SPACES.items():
        assert name.encode() not in raw
        assert content_id(name.encode()) not in raw
        assert key not in raw and key[:16] not in raw


def test_stranger_bytes_look_random_and_are_unlinkable_across_sessions() -> None:
    one = _stranger_view(NAMES[:5], seed=1)
    two = _stranger_view(NAMES[:5], seed=2)
    tokens_one = set(m.decode(one[1]).message.tokens)  # type: ignore[union-attr]
    tokens_two = set(m.decode(two[1]).message.tokens)  # type: ignore[union-attr]
    assert len(tokens_one) == len(tokens_two) == 16
    assert not tokens_one & tokens_two  # fresh nonces: the same spaces give new tokens


def test_reflected_tokens_do_not_match() -> None:
    """A stranger that echoes our own tokens back must not appear to share our spaces."""
    a = SpaceExchange(A, B, keys(NAMES[:3]))
    hello = a.start()
    (ours,) = a.receive(m.SpaceHello(os.urandom(32)))
    assert isinstance(ours, m.SpaceTokens) and hello.nonce
    a.receive(ours)  # reflection
    assert a.shared == frozenset()


def test_relayed_tokens_do_not_match() -> None:
    """Tokens B computed for C are useless to C when replayed to A (peer keys are bound)."""
    b_to_c = SpaceExchange(B, C, keys(NAMES[:3]))
    a = SpaceExchange(A, C, keys(NAMES[:3]))
    a_hello = a.start()
    b_to_c.start()
    (b_tokens,) = b_to_c.receive(a_hello)  # C relays A's nonce to B
    a.receive(m.SpaceHello(os.urandom(32)))
    a.receive(b_tokens)
    assert a.shared == frozenset()


def test_replicator_with_only_the_exchange_key_matches_members() -> None:
    first_read_key = os.urandom(32)
    sid = "bafyspace.k3"
    member = SpaceExchange(A, B, {sid: exchange_key(first_read_key, sid)})
    # the replicator got K_space sealed in the ACL; it never sees first_read_key
    replicator = SpaceExchange(B, A, {sid: exchange_key(first_read_key, sid)})
    t = run_exchange(member, replicator)
    assert t.shared_a == t.shared_b == {sid}
    assert first_read_key not in b"".join(t.received_by_b)


def test_exchange_key_is_bound_to_space_and_key() -> None:
    k = bytes(32)
    assert exchange_key(k, "a") != exchange_key(k, "b")
    assert exchange_key(k, "a") != exchange_key(bytes([1]) * 32, "a")
    assert exchange_key(k, "a") == exchange_key(k, "a") != k
    with pytest.raises(ValueError):
        exchange_key(b"short", "a")


def test_channel_binding_changes_tokens() -> None:
    n1, n2 = os.urandom(32), os.urandom(32)
    key = SPACES[NAMES[0]]
    assert space_token(key, A, B, n1, n2, b"h1") != space_token(key, A, B, n1, n2, b"h2")
    assert space_token(key, A, B, n1, n2) != space_token(key, B, A, n2, n1)


def test_protocol_misuse_is_refused() -> None:
    x = SpaceExchange(A, B, keys(NAMES[:1]))
    with pytest.raises(ProtocolError):
        x.receive(m.SpaceHello(os.urandom(32)))  # not started
    hello = x.start()
    with pytest.raises(ProtocolError):
        x.start()
    with pytest.raises(ProtocolError):
        x.receive(m.SpaceTokens((bytes(16),) * 16))  # tokens before hello
    with pytest.raises(ProtocolError):
        x.receive(m.SpaceHello(hello.nonce))  # echoed nonce
    x.receive(m.SpaceHello(os.urandom(32)))
    with pytest.raises(ProtocolError):
        x.receive(m.SpaceHello(os.urandom(32)))  # second hello
    with pytest.raises(ProtocolError):
        x.receive(m.HeadUpdate("s", bytes(32), (), ()))
    x.receive(m.SpaceTokens((bytes(16),) * 16))
    with pytest.raises(ProtocolError):
        x.receive(m.SpaceTokens((bytes(16),) * 16))
    with pytest.raises(ProtocolError):
        SpaceExchange(A, A, {})


def test_padding_buckets_and_limit() -> None:
    assert [padded_size(n) for n in (0, 16, 17, 64, 65, 4096)] == [16, 16, 64, 64, 256, 4096]
    with pytest.raises(ProtocolError):
        padded_size(4097)
    too_many = {f"s{i}": bytes(32) for i in range(4097)}
    with pytest.raises(ProtocolError):
        SpaceExchange(A, B, too_many)
