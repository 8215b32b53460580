"""The jobs one engine runs with its peer (sans-IO): which core a job key runs, and what its
outcome changes — the space's status, the retry verdict, and the follow-up in-sync check.

A job key is ``(kind, space id, tree id or b"")`` (:data:`~p2psync.sync.effects.JobKey`):
``"space"`` (:class:`~p2psync.sync.pull.SpaceSync`: ACL pull, head sync, tree jobs),
``"acl"`` (:class:`~p2psync.sync.pull.AclPull`), ``"tree"``
(:class:`~p2psync.sync.pull.TreePull`) and ``"heads"`` (:class:`HeadCheck`: the head sync
alone). The engine's scheduler dedupes, rate-limits and retries keys; the engine drives the
core from :func:`core_for` and reports the outcome to :func:`succeeded` or :func:`failed`.

**The in-sync check.** Status shows a peer in sync for a space while the fingerprint both
sides last agreed on is still ours (:mod:`p2psync.sync.status`). Without help that agreement
is only refreshed by the periodic head sync (30 s), so a peer that has just taken in every
change we pushed would be shown out of sync meanwhile. Two rules close that gap:

* :func:`after_push`: once the last ``HEAD_UPDATE`` of a space queued for the peer has been
  sent, a ``("heads", space)`` job runs. Its request travels on the same stream *after* the
  push, and the peer reads its stream in order, so the answer reflects the push: an empty
  difference is the peer's acknowledgement of our heads. Deduped by the scheduler (one in
  at most one per :data:`CHECK_SPACING` (throttled by the scheduler: the first at once, the
  last after the burst's last push), so a burst of pushes — typing, a script writing — costs
  a round trip per 250 ms, not one per push.
* :func:`succeeded` for a ``"tree"`` job: when the pulls a head sync asked for are all done
  and that head sync found differences, check again with a ``("heads", space)`` job —
  concurrent edits cross (the peer's answer can predate a change it pushed us a moment later,
  and the pull then shows the same heads on both sides). At most :data:`MAX_RECHECKS`
  such follow-ups run in a row without reaching agreement, so a peer that lists differences
  it never serves costs a bounded number of requests.
"""

from __future__ import annotations

from p2psync.errors import P2PSyncError
from p2psync.sync.effects import Effect, JobKey, Submit
from p2psync.sync.messages import HeadUpdate, Message
from p2psync.sync.peerstate import PeerState
from p2psync.sync.pull import Core, SpaceSync, job_core, job_failure
from p2psync.sync.replicas import Pusher

CHECK_PRIORITY = 0  #: the in-sync check runs before anything else queued (it is cheap)
MAX_RECHECKS = 2  #: follow-up checks in a row that did not reach agreement
#: checks after our pushes of one space start at least this many seconds apart
CHECK_SPACING = 0.25


class HeadCheck(SpaceSync):
    """A head sync of one space without the ACL pull first: one round trip when both sides
    agree (the answer to the whole-set range is empty), the usual tree jobs when not."""

    def __init__(self, state: PeerState, source: Pusher, space_id: str) -> None:
        super().__init__(state, source, space_id)
        if not self.done and self.session is None:
            self.sub = None  # skip the ACL pull SpaceSync starts with
            self._start_head_sync()


def core_for(state: PeerState, source: Pusher, key: JobKey) -> Core:
    """The requester core that runs the job ``key``."""
    if key[0] == "heads":
        return HeadCheck(state, source, key[1])
    return job_core(state, source, key)


def after_push(message: Message, more_for_space: bool) -> list[Effect]:
    """A push was sent; ``more_for_space``: more pushes of its space are still queued."""
    if isinstance(message, HeadUpdate) and not more_for_space:
        return [Submit(("heads", message.space_id, b""), CHECK_PRIORITY, CHECK_SPACING)]
    return []


def succeeded(state: PeerState, key: JobKey, now: float) -> list[Effect]:
    """A job completed at wall time ``now``: its space's status, and the follow-up check."""
    kind, sid, _ = key
    st = state.space_state(sid)
    st.last_success = now
    if kind in ("space", "heads"):
        st.differed = st.agreed_hash is None
        if not st.differed:
            st.rechecks = 0
    elif kind == "tree" and st.differed and not st.pending and st.rechecks < MAX_RECHECKS:
        st.differed = False
        st.rechecks += 1
        return [Submit(("heads", sid, b""), CHECK_PRIORITY)]
    return []


def failed(state: PeerState, key: JobKey, exc: P2PSyncError | TimeoutError,
           ) -> tuple[str, bool, float | None]:
    """A job failed: noted in its space's status; returns how the scheduler retries it
    (``(reason, retryable, retry after seconds)``, see :func:`~p2psync.sync.pull.job_failure`)."""
    verdict = job_failure(exc)
    state.space_state(key[1]).last_error = verdict[0]
    return verdict
