"""bokeh-export stopped by a signal: SIGINT or SIGTERM raise ``Interrupted`` where the export
is, so the atomic writes under way remove their temporary files (``dbsi.runtime.atomic``) and
no file appears under the final name; ``hold_signals`` keeps a signal from landing between the
renames of two files that belong together."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

from dbsi.train.stop import STOP_SIGNALS


class Interrupted(BaseException):
    """A stop signal arrived. A BaseException, like KeyboardInterrupt, so that no ``except
    Exception`` on the way swallows it."""

    def __init__(self, signum: signal.Signals) -> None:
        super().__init__(f"stopped by {signum.name}")
        self.signum = signum


@contextlib.contextmanager
def raise_on_signals() -> Iterator[None]:
    """Turn the first SIGINT or SIGTERM into ``Interrupted``; the handlers in place before
    come back at once, so a second signal acts as it would have without this."""
    previous: dict[signal.Signals, Any] = {}

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def handle(signum: int, frame: Any) -> None:
        restore()
        raise Interrupted(signal.Signals(signum))

    for signum in STOP_SIGNALS:
        # None: a handler installed outside Python, which cannot be put back.
        previous[signum] = signal.signal(signum, handle) or signal.SIG_DFL
    try:
        yield
    finally:
        restore()


@contextlib.contextmanager
def hold_signals() -> Iterator[None]:
    """Hold back SIGINT and SIGTERM until the block ends, then deliver the first that came to
    the handlers in place before. (Done with Python handlers, not the kernel's signal mask: in
    a process with threads the kernel hands a signal to any thread that does not block it.)"""
    pending: list[int] = []
    previous = {
        signum: signal.signal(signum, lambda n, _: pending.append(n)) or signal.SIG_DFL
        for signum in STOP_SIGNALS
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if pending:
            signal.raise_signal(pending[0])
