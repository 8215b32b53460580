"""One backoff rule for every retry in p2psync (dials, reconnects, scheduler jobs).

Attempt ``n`` (counting from 1) waits ``d = min(cap, base * factor**(n-1))`` shortened by a
random share of at most ``jitter``: a uniform time in ``[d * (1 - jitter), d]``. The default
``jitter=0.5`` is "equal jitter" — never zero, never synchronised across devices that lost the
same peer at the same moment; ``jitter=0`` gives exact delays (tests). Sans-IO: the caller
keeps the attempt count and the clock; randomness comes from ``rng`` or an explicit ``rand``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Exponential backoff with bounded jitter (see the module docstring)."""

    base: float = 0.5
    factor: float = 2.0
    cap: float = 60.0
    rng: random.Random = field(default_factory=random.Random)
    jitter: float = 0.5  #: the share of the delay that is random (0: none, 0.5: equal jitter)

    def __post_init__(self) -> None:
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter is a share of the delay: 0..1")

    def delay(self, attempt: int, rand: float | None = None) -> float:
        """Seconds to wait before attempt ``attempt`` + 1; ``rand`` in [0, 1) overrides rng."""
        if attempt < 1:
            raise ValueError("attempts count from 1")
        d = min(self.cap, self.base * self.factor ** min(attempt - 1, 64))
        r = self.rng.random() if rand is None else rand
        return d * (1.0 - self.jitter * r)
