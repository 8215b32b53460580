"""The spaces of one device as the sync engines see them (no I/O of its own).

:class:`Replicas` owns the opened :class:`~p2psync.replica.space.Space` objects of one store,
keeps each space's head-sync set (:class:`~p2psync.sync.ldiff.LDiff`) up to date from the
space listeners, answers the access question ("may this account receive this space?"), and
fans every new tree change or ACL record out to the connected engines (push). It also wakes
anyone waiting for "something changed" (status, tests) without polling.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from p2psync.crypto.keys import AccountKey, DeviceKey
from p2psync.errors import ProtocolError
from p2psync.replica.acl import Acl, AclState, InviteCode
from p2psync.replica.change import Change
from p2psync.replica.header import SpaceHeader
from p2psync.replica.space import AclAddResult, Space
from p2psync.replica.storage import ReplicaStore
from p2psync.replica.tree import AddResult
from p2psync.sync.ldiff import LDiff, heads_hash
from p2psync.sync.memberlimits import MemberLimits, MemberUsage
from p2psync.sync.spacex import header_exchange_key
from p2psync.transport.interface import PeerConnection

if TYPE_CHECKING:  # pragma: no cover
    pass


class Pusher(Protocol):
    """What an engine offers the fan-out: non-blocking pushes (they only enqueue)."""

    def push_tree(self, space: Space, tree_id: bytes, result: AddResult) -> None: ...

    def push_acl(self, space: Space, record_ids: list[bytes]) -> None: ...


class OfferingPeer(Protocol):
    """What a storage policy may use of the engine of the peer that sent a ``SPACE_OFFER``:
    its authenticated connection, the spaces it shares with us, its job queue and bootstrap."""

    @property
    def conn(self) -> PeerConnection: ...

    @property
    def shared(self) -> set[str]:
        """Space ids this peer and we both hold (exchange done); a policy may add to it."""

    def submit(self, key: tuple[str, str, bytes], priority: int = 1) -> None:
        """Queue a sync job: ``("acl"|"tree"|"space", space id, tree id or b"")``."""

    async def bootstrap(self, space_id: str, code: InviteCode | None = None) -> Space:
        """Fetch a space we may access from this peer."""


@runtime_checkable
class StoragePolicy(Protocol):
    """Everything the sync layer asks of "what this peer stores and vouches for".

    Ordinary devices run :class:`DevicePolicy`; a backup peer installs
    :class:`p2psync.backup.policy.BackupPolicy` (quotas, replicator-only admission, automatic
    fetching, signed receipts). The engine calls every method below directly (never through
    ``getattr``); ``tests/conformance/policy_suite.py`` checks each implementation.
    """

    def admit_space(self, space_id: str, header: SpaceHeader, acl: Acl) -> None:
        """Before a space from a peer is stored: raise (e.g. ``AccessDenied``) to refuse it;
        nothing is stored then."""

    def admit_changes(self, space: Space, tree_id: bytes, raws: Sequence[bytes]) -> None:
        """Before a batch of changes from a peer is verified and stored: raise (e.g.
        ``QuotaExceeded``) to refuse the whole batch; nothing of it is stored then."""

    def on_offer(self, peer: OfferingPeer, space_id: str) -> None:
        """A peer says we replicate ``space_id`` (``SPACE_OFFER``). Must not block: start a
        task if fetching. Devices ignore offers (members join by invite)."""

    def receipt(self, space: Space, nonce: bytes) -> bytes:
        """A signed storage receipt of ``space`` for a ``RECEIPT_REQUEST``; raises
        :class:`~p2psync.errors.ProtocolError` on a peer that issues none."""


class DevicePolicy:
    """The default policy of an ordinary device: stores whatever passes the replica's own
    checks (signatures, ACL) and, with ``limits``, the per-author and per-space limits
    (:mod:`p2psync.sync.memberlimits`); ignores offers, issues no receipts."""

    def __init__(self, limits: MemberLimits | None = None) -> None:
        self.usage = MemberUsage(limits) if limits is not None and limits.enabled else None

    def admit_space(self, space_id: str, header: SpaceHeader, acl: Acl) -> None:
        return None

    def admit_changes(self, space: Space, tree_id: bytes, raws: Sequence[bytes]) -> None:
        if self.usage is not None:
            self.usage.check(space, tree_id, raws)

    def on_offer(self, peer: OfferingPeer, space_id: str) -> None:
        return None  # only replicators fetch offered spaces; members join by invite

    def receipt(self, space: Space, nonce: bytes) -> bytes:
        raise ProtocolError("this peer issues no storage receipts")


def _conforms(policy: DevicePolicy) -> StoragePolicy:
    """Static check (mypy): the default policy implements the declared seam."""
    return policy


def may_access(state: AclState, account: bytes) -> bool:
    """The serving rule: members (any role) and replicators receive a space; nobody else."""
    return account in state.members or account in state.replicators


class Replicas:
    """Every space held in one store, with head-sync sets, access checks and push fan-out."""

    def __init__(self, store: ReplicaStore, account: AccountKey, device: DeviceKey, *,
                 window: float = 0.0, limits: MemberLimits | None = None) -> None:
        self.store = store
        self.account = account
        self.device = device
        self.window = window
        self.spaces: dict[str, Space] = {}
        self._ldiffs: dict[str, LDiff] = {}
        self._xkeys: dict[str, bytes] = {}
        self.pushers: list[Pusher] = []
        #: The engine whose input is being applied right now (not pushed back to it).
        self.source: Pusher | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self.version = 0  #: bumped on every change anyone may wait for
        self._policy: StoragePolicy = DevicePolicy(limits)
        for sid in store.list_spaces():
            self._attach(Space.open(store, account, device.public, sid, window=window))

    @property
    def policy(self) -> StoragePolicy:
        """What this device stores and vouches for (a backup installs its own)."""
        return self._policy

    @policy.setter
    def policy(self, policy: StoragePolicy) -> None:
        # checked when installed, so a partial policy fails here, not at the first offer
        if not isinstance(policy, StoragePolicy):
            raise TypeError(f"{type(policy).__name__} does not implement StoragePolicy")
        self._policy = policy

    # --- spaces --------------------------------------------------------------------------------
    def _attach(self, space: Space) -> Space:
        ld = LDiff()
        space.purged.clear()
        for tid in space.tree_ids():
            ld.set(tid, heads_hash(space.heads(tid)))
        self.spaces[space.id] = space
        self._ldiffs[space.id] = ld
        self._xkeys[space.id] = header_exchange_key(space.header.raw, space.id)
        space.tree_listeners.append(self._on_tree)
        space.acl_listeners.append(self._on_acl)
        self.notify()
        return space

    def create_space(self, space_type: str = "default") -> Space:
        """A new space owned by this account."""
        return self._attach(Space.create(self.store, self.account, self.device.public,
                                         space_type=space_type, window=self.window))

    def adopt(self, space_id: str, header_raw: bytes, acl_raws: Sequence[bytes]) -> Space:
        """Take in a space received from a peer (verifies header and ACL; see Space.adopt)."""
        existing = self.spaces.get(space_id)
        if existing is not None:
            return existing
        header = SpaceHeader.verify(header_raw, space_id)
        self.policy.admit_space(space_id, header, Acl.from_records(
            space_id, acl_raws, me=self.account, owner=header.owner))
        return self._attach(Space.adopt(self.store, self.account, self.device.public, space_id,
                                        header_raw, acl_raws, window=self.window))

    def forget(self, space_id: str) -> None:
        """Stop holding a space (``space leave``): detached from head sync and pushes here;
        the caller drops it from the store."""
        space = self.spaces.pop(space_id, None)
        self._ldiffs.pop(space_id, None)
        self._xkeys.pop(space_id, None)
        if space is not None:
            space.flush()
            with contextlib.suppress(ValueError):
                space.tree_listeners.remove(self._on_tree)
            with contextlib.suppress(ValueError):
                space.acl_listeners.remove(self._on_acl)
        self.notify()

    def ldiff(self, space_id: str) -> LDiff:
        return self._ldiffs[space_id]

    def header(self, space_id: str) -> SpaceHeader:
        return self.spaces[space_id].header

    # --- access --------------------------------------------------------------------------------
    def may_access(self, space_id: str, account: bytes) -> bool:
        """Whether ``account`` may receive ``space_id`` from us (False for unknown spaces)."""
        space = self.spaces.get(space_id)
        return space is not None and may_access(space.acl.state, account)

    def exchange_keys_for(self, account: bytes) -> dict[str, bytes]:
        """Exchange keys of the spaces we would list to ``account``: only spaces where it is a
        member or replicator in our ACL copy, so strangers get nothing but padding — and
        spaces it was removed from, so that it learns why (``sync/notice.py``, issue 14)."""
        from p2psync.sync.notice import removal_of

        return {sid: k for sid, k in self._xkeys.items() if self.may_access(sid, account)
                or removal_of(self.spaces.get(sid), account) is not None}

    # --- applying remote input -----------------------------------------------------------------
    def apply_changes(self, source: Pusher, space: Space, tree_id: bytes,
                      raws: Sequence[bytes], *,
                      parsed: Mapping[bytes, Change] | None = None) -> AddResult:
        """Verify and store changes from ``source`` (not echoed back to it); ``parsed`` as in
        :meth:`Space.add_changes` (raw bytes -> their strict parse, made by the caller)."""
        self.policy.admit_changes(space, tree_id, raws)
        prev, self.source = self.source, source
        try:
            return space.add_changes(tree_id, raws, parsed=parsed)
        finally:
            self.source = prev

    def apply_base(self, source: Pusher, space: Space, tree_id: bytes, root_raw: bytes,
                   base_raw: bytes, *, parsed: Mapping[bytes, Change] | None = None,
                   ) -> AddResult:
        """Start a shallow tree from ``source``'s snapshot-first answer (see
        :meth:`Space.add_base`); the storage policy admits the two changes first."""
        self.policy.admit_changes(space, tree_id, [root_raw, base_raw])
        prev, self.source = self.source, source
        try:
            return space.add_base(tree_id, root_raw, base_raw, parsed=parsed)
        finally:
            self.source = prev

    def apply_acl(self, source: Pusher, space: Space, raws: Sequence[bytes]) -> AclAddResult:
        """Admit ACL records from ``source`` (not echoed back to it)."""
        prev, self.source = self.source, source
        try:
            return space.add_acl_records(raws)
        finally:
            self.source = prev

    def refresh(self, space_id: str, tree_id: bytes | None) -> None:
        """Another process sharing our store wrote changes of this tree (PostgreSQL NOTIFY,
        docs/backup-cluster.md): bring memory up to date and push to connected peers; a space
        new to us is opened from the store."""
        space = self.spaces.get(space_id)
        if space is None:
            if self.store.get_space(space_id) is None:
                return
            space = self._attach(Space.open(self.store, self.account, self.device.public,
                                            space_id, window=self.window))
        space.refresh_acl()
        if tree_id is not None:
            space.refresh(tree_id)

    # --- listeners -----------------------------------------------------------------------------
    def _on_tree(self, space_id: str, tree_id: bytes, result: AddResult) -> None:
        space = self.spaces.get(space_id)
        if space is None:
            return
        self._ldiffs[space_id].set(tree_id, heads_hash(result.heads))
        for p in list(self.pushers):
            if p is not self.source:
                p.push_tree(space, tree_id, result)
        self.notify()

    def _on_acl(self, space_id: str, record_ids: list[bytes]) -> None:
        space = self.spaces.get(space_id)
        if space is None:
            return
        while space.purged:  # objects a tombstone dropped leave head sync too
            self._ldiffs[space_id].remove(space.purged.pop())
        for p in list(self.pushers):
            if p is not self.source:
                p.push_acl(space, record_ids)
        self.notify()

    # --- change notification -------------------------------------------------------------------
    def notify(self) -> None:
        """Wake everyone waiting in :meth:`wait_for`."""
        self.version += 1
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def changed(self) -> asyncio.Future[None]:
        """A future completed by the next :meth:`notify` (registered at once, so a notify
        between this call and the await is not missed)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        return fut

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Wait until ``predicate()`` holds, re-checking on every change; TimeoutError after
        ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await self.changed()
