"""The data position a checkpoint stores: how far each lane of the global order was consumed.

The training loop records every example it uses (its lane, raw index, part); ranks' records
merge by taking each lane's furthest position, so the merged state is the same whichever ranks
and workers consumed which lanes, and a run resumes from it on any number of either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sinktrain.errors import SinkTrainError

FORMAT = 2  # 1: sinktrain's earlier per-reader stream, whose position cannot be carried over


@dataclass
class LaneState:
    """What a lane has consumed: raw samples, how many of those were bad, and how many examples of
    the next raw sample were used already (a sample split into several examples, e.g. LSG's one
    example per turn, can be cut by a checkpoint)."""

    consumed: int = 0
    bad: int = 0
    parts_done: int = 0


@dataclass
class StreamState:
    """Resume point of the whole stream: lanes, micro-batch size, micro-batches the job consumed
    (set when a checkpoint is written) and one LaneState per lane that has started."""

    lanes: int
    micro_batch: int = 1
    micro_batches: int = 0
    states: dict[int, LaneState] = field(default_factory=dict)

    def update(self, lane: int, index: int, bad: int, part: int = 0, parts: int = 1) -> None:
        """Example ``part`` of ``parts`` made from lane ``lane``'s raw sample ``index`` was used."""
        self.advance(lane, (index + 1, 0) if part + 1 >= parts else (index, part + 1), bad)

    def advance(self, lane: int, position: tuple[int, int], bad: int) -> None:
        """Move ``lane`` to ``position`` = (raw samples consumed, examples of the next one used), never back."""
        state = self.states.setdefault(lane, LaneState())
        if position > (state.consumed, state.parts_done):
            state.consumed, state.parts_done = position
            state.bad = bad

    def merge(self, other: "StreamState") -> None:
        for lane, state in other.states.items():
            self.advance(lane, (state.consumed, state.parts_done), state.bad)
        self.micro_batches = max(self.micro_batches, other.micro_batches)

    def lane(self, lane: int) -> LaneState:
        return self.states.get(lane, LaneState())

    def totals(self) -> tuple[int, int]:
        return sum(s.consumed for s in self.states.values()), sum(s.bad for s in self.states.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "lanes": self.lanes, "micro_batch": self.micro_batch, "micro_batches": self.micro_batches,
            "states": {str(k): vars(v) for k, v in self.states.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StreamState":
        if data.get("format") != FORMAT:
            raise SinkTrainError(
                "this checkpoint's data position is from an earlier sinktrain (one stream per reader), which "
                "cannot be continued exactly; finish that run with the sinktrain that started it, or start afresh"
            )
        states = {int(k): LaneState(**v) for k, v in data["states"].items()}
        return cls(data["lanes"], data["micro_batch"], data["micro_batches"], states)
