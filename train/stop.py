"""Stopping a run cleanly on Ctrl-C (SIGINT) or SIGTERM (``kill``, a job scheduler, torchrun
passing on what it received)."""

from __future__ import annotations

import signal
from typing import Any

# In order of precedence: when the ranks of a DDP job received different signals, all of them
# report the first one here that any rank received.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """The first stop signal sets ``received``, which the loop reads between steps (so the
    checkpoint it then writes holds whole steps); the handlers in place before come back at
    once, so a second signal of either kind acts as it would have without this (SIGINT
    raises KeyboardInterrupt, SIGTERM ends the process)."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self.previous: dict[signal.Signals, Any] = {}

    def __enter__(self) -> StopRequest:
        for signum in STOP_SIGNALS:
            # None: a handler installed outside Python, which cannot be put back; the default
            # is the nearest.
            self.previous[signum] = signal.signal(signum, self.handle) or signal.SIG_DFL
        return self

    def handle(self, signum: int, frame: Any) -> None:
        self.received = signal.Signals(signum)
        self.restore()

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def flags(self) -> list[float]:
        """One 0/1 per signal of STOP_SIGNALS, to be summed over the ranks (``agreed``)."""
        return [float(self.received == signum) for signum in STOP_SIGNALS]


def agreed(flag_sums: list[float]) -> signal.Signals | None:
    """The signal a DDP job stops for, from ``StopRequest.flags`` summed over its ranks: every
    rank computes the same answer from the same sums."""
    for signum, count in zip(STOP_SIGNALS, flag_sums):
        if count > 0:
            return signum
    return None


def exit_status(signum: signal.Signals) -> int:
    """The shell's code for a process ended by ``signum``: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + int(signum)
