"""Stop at a step boundary when the scheduler says so: Slurm's preemption or time-limit warning
(``#SBATCH --signal=B:USR1@120``, forwarded by slurm/train.sbatch), ``scancel`` (SIGTERM), or a
user's ``kill -USR1``.

    stop = StopSignals()              # in the main process, before the data workers start
    ...each step: flag = stop.requested, summed over ranks with the step's other totals
    if the sum is > 0: every rank saves the checkpoint of this step, then leaves the loop

The handler only records the signal: the checkpoint is written by the loop, outside any
collective, and because the flag travels with the step's all-reduce every rank sees it on the
same step and stops there, whichever rank the signal reached. Data workers ignore both signals
(Slurm signals a step's whole process tree: a worker killed by it would crash the rank before
the save).
"""

from __future__ import annotations

import logging
import signal

logger = logging.getLogger("sinktrain")

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class StopSignals:
    def __init__(self):
        self.received: str | None = None
        self._previous = {sig: signal.signal(sig, self._record) for sig in STOP_SIGNALS}

    def _record(self, signum, frame) -> None:
        if self.received is None:
            self.received = signal.Signals(signum).name
            logger.warning("%s received: saving a checkpoint at the end of this step, then stopping", self.received)

    @property
    def requested(self) -> bool:
        return self.received is not None

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: the rank's main process handles the stop."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
