"""Stopping a run cleanly on Ctrl-C."""

from __future__ import annotations

import signal
from typing import Any


class StopRequest:
    """Ctrl-C sets a flag that the loop checks between steps, so the checkpoint it then
    writes holds a whole step; a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self.previous: Any = None

    def __enter__(self) -> StopRequest:
        self.previous = signal.signal(signal.SIGINT, self.handle)
        return self

    def handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self.previous)

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self.previous)
