"""What a prepare stage did with every input record, and the error for a source that gives nothing.

Every record read is either kept or dropped for exactly one named reason, so `read = kept + Σ dropped`
must hold; `metrics()` checks it before anything is written. Other numbers (documents parsed, pages
decoded with replacement characters) go in `info`: they describe the input without being records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class SourceError(RuntimeError):
    """A source that cannot be read or yields nothing usable; the stage exits with this message."""


@dataclass
class Counts:
    source: str
    read: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    info: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str, n: int = 1) -> None:
        if n:
            self.dropped[reason] = self.dropped.get(reason, 0) + n

    def note(self, name: str, n: int = 1) -> None:
        self.info[name] = self.info.get(name, 0) + n

    def metrics(self) -> dict[str, Any]:
        total = self.kept + sum(self.dropped.values())
        if self.read != total:  # a bug in a prepare step, never the user's input
            raise RuntimeError(f"{self.source}: counts do not reconcile: read {self.read} != {total}")
        return {
            "source": self.source,
            "read": self.read,
            "kept": self.kept,
            "dropped": dict(sorted(self.dropped.items())),
            **dict(sorted(self.info.items())),
        }

    def ensure_any(self, survivors: int, what: str) -> None:
        """Raise when nothing survived: an empty output would only fail later, far from the cause."""
        if self.read == 0:
            raise SourceError(f"{self.source}: the source yielded no {what}")
        if survivors == 0:
            raise SourceError(f"{self.source}: all {self.read} {what} were dropped: {self.dropped}")
