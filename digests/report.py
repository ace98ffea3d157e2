"""What one ``digest send`` did (:class:`SendReport`), counted from its two threads."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class SendReport:
    """What a run did; counted from two threads, so through :meth:`add`."""

    sent: int = 0
    failed: int = 0
    pending: int = 0
    empty: int = 0
    already: int = 0
    #: Deliveries whose outcome is unknown (never resent without the operator's policy).
    unknown: int = 0
    errors: list[str] = field(default_factory=list)
    fatal: str | None = None
    #: A dry run: who would get a digest now, and how many papers it holds.
    would_send: list[tuple[str, int]] = field(default_factory=list)
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    @property
    def ok(self) -> bool:
        return not self.failed and not self.unknown and not self.errors and self.fatal is None

    def add(self, error: str | None = None, **counts: int) -> None:
        """Add to the named counters (``sent=1``) and note an error line, atomically."""
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)
            if error is not None:
                self.errors.append(error)
