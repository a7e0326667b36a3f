"""Near-duplicate escalations: during an incident a thousand customers, or one monitoring script, send the
same complaint; the large model needs to answer it once.

An escalation is a duplicate of an earlier one when both fall in the same window, share a scope (the same
customer, or the same template: the redacted text with numbers masked) and their embeddings, which the
model computed anyway, have a cosine similarity at or above a threshold. The first is sent with a count of
the duplicates folded into it in its batch; the others are not sent, and their enriched records name the
escalation that stands for them. Tickets escalated because the customer is a VIP are never folded.
Pure: the caller passes the time.
"""

from __future__ import annotations

import hashlib
import re
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

_NUMBER = re.compile(r"\d+(?:[.,:/-]\d+)*")
_SPACE = re.compile(r"\s+")

DEFAULT_WINDOW_S = 600.0
DEFAULT_MIN_COSINE = 0.95
MAX_ENTRIES = 5000
"""Most escalations remembered at once (oldest forgotten first): bounds memory and search time in a storm."""


def template_key(text: str) -> str:
    """A short hash of ``text`` with numbers masked, case and spacing folded: order #123 and #456 agree."""
    masked = _SPACE.sub(" ", _NUMBER.sub("#", text.lower())).strip()
    return hashlib.blake2b(masked.encode(), digest_size=8).hexdigest()


@dataclass
class _Entry:
    at: float
    escalation_id: str
    scopes: frozenset[str]
    row: int


@dataclass
class EscalationDeduper:
    """Recent escalations of one worker process, for :meth:`first_of`.

    Args:
        window_s: how long an escalation stands for later near-duplicates (default 600 s).
        min_cosine: embeddings at least this similar are near-duplicates (default 0.95).
        max_entries: most escalations remembered (default :data:`MAX_ENTRIES`).
    """

    window_s: float = DEFAULT_WINDOW_S
    min_cosine: float = DEFAULT_MIN_COSINE
    max_entries: int = MAX_ENTRIES
    _entries: deque[_Entry] = field(default_factory=deque)
    _vectors: npt.NDArray[np.float32] | None = None
    _next_row: int = 0

    def first_of(
        self, escalation_id: str, embedding: npt.NDArray[np.float32], scopes: set[str], now: float
    ) -> str | None:
        """The id of the earlier escalation this one duplicates, or ``None`` (it is then remembered).

        ``scopes`` are keys such as ``customer:C-1`` and ``template:ab12``; an earlier escalation counts
        only if it shares one of them.
        """
        self._expire(now)
        vec = np.asarray(embedding, dtype=np.float32).reshape(-1)
        if self._entries and self._vectors is not None:
            rows = np.array([e.row for e in self._entries])
            sims = self._vectors[rows % self.max_entries] @ vec
            for i in np.argsort(-sims, kind="stable"):
                if sims[i] < self.min_cosine:
                    break
                entry = self._entries[int(i)]
                if entry.scopes & scopes:
                    return entry.escalation_id
        self._remember(escalation_id, vec, frozenset(scopes), now)
        return None

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self, now: float) -> None:
        while self._entries and (now - self._entries[0].at > self.window_s or len(self._entries) >= self.max_entries):
            self._entries.popleft()

    def _remember(self, escalation_id: str, vec: npt.NDArray[np.float32], scopes: frozenset[str], now: float) -> None:
        if self._vectors is None:
            self._vectors = np.zeros((self.max_entries, len(vec)), dtype=np.float32)
        row = self._next_row
        self._vectors[row % self.max_entries] = vec
        self._next_row += 1
        self._entries.append(_Entry(now, escalation_id, scopes, row))
