"""Stopping ``bokeh-run`` on SIGTERM (a scheduler preempting the job, ``kill``) or SIGINT
(Ctrl-C), well inside the usual 30 s grace period (Slurm's ``KillWait``, Kubernetes'
``terminationGracePeriodSeconds``).

The run reads ``StopSignals.requested`` between pictures: it stops taking new ones, finishes
the batch in flight and the writes under way (every output is written atomically, so a
picture is whole or absent) and returns; the caller prints the summary and ends the process
with ``exit``.

That alone is not enough: Python runs signal handlers on the main thread between bytecodes
only, and the main thread may be inside one inference call (ONNX Runtime, OpenVINO,
TensorRT) that nothing can cut short and that, for a big batch on a slow CPU, can take longer
than the grace period. ONNX Runtime and OpenVINO release the GIL during the call (a 10 ms
ticker thread kept ticking through full-HD batches), so another thread can act meanwhile. So
the signal is also written to a pipe (``signal.set_wakeup_fd``: the
C-level handler does it the moment the signal arrives) that a watcher thread reads. The
watcher gives the run ``budget_s`` seconds to end by itself; it ends the process itself when
that time is spent, at once when the call in flight is not expected to end within the budget
(``uninterruptible``), and at once on a second signal: it calls ``on_abandon`` (the summary),
deletes the temporary files of atomic writes under way and leaves with ``os._exit``, which
waits for no thread (a decode or encode thread stuck on a slow disk cannot hold the exit up).
Worst case from the first signal to the exit: ``budget_s`` plus the time to print the summary
and delete the temporary files.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from dbsi.runtime.atomic import abandon_partial_files

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: seconds from the first signal for the run to end by itself; then the watcher ends it. A
#: third of the common 30 s grace period: the rest is margin for a loaded machine.
STOP_BUDGET_S = 10.0
#: how long the watcher lets the main thread finish printing its own summary before exiting
PRINT_WAIT_S = 2.0
_CLOSE = b"\0"  # not a signal number: tells the watcher to end


def exit_status(signum: signal.Signals) -> int:
    """The shell's code for a process ended by ``signum``: 143 for SIGTERM, 130 for SIGINT."""
    return 128 + int(signum)


def hard_exit(code: int) -> None:
    """Flush what was printed and end the process now, joining no thread and running no
    exit handler (an inference or I/O call in another thread cannot hold it up)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


class StopSignals:
    """Catches SIGTERM and SIGINT while the ``with`` block runs; puts the previous handlers
    (and wakeup fd) back after it. Outside the main thread it catches nothing (Python allows
    handlers only there)."""

    def __init__(
        self,
        budget_s: float = STOP_BUDGET_S,
        on_abandon: Callable[[signal.Signals, str], None] | None = None,
    ) -> None:
        self.budget_s = budget_s
        #: called on the watcher thread before it ends the process, with the first signal
        #: and why the run is abandoned; prints the summary
        self.on_abandon = on_abandon
        #: the first stop signal received, None while none was
        self.requested: signal.Signals | None = None
        self._lock = threading.Lock()  # held by whoever prints the end of the run
        self._ended = False  # the end of the run is printed
        self._busy: tuple[float, float | None] | None = None
        self._previous: dict[signal.Signals, Any] = {}
        self._previous_fd: int | None = None
        self._pipe: tuple[int, int] | None = None
        self._watcher: threading.Thread | None = None

    # -- installing and restoring

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self
        read, write = os.pipe()
        os.set_blocking(write, False)
        # The wakeup fd first: a signal caught before it is set would not reach the watcher.
        try:
            self._previous_fd = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        except ValueError:  # not allowed here (a subinterpreter): catch nothing
            os.close(read)
            os.close(write)
            return self
        self._pipe = (read, write)
        for signum in STOP_SIGNALS:
            # None: a handler installed outside Python, which cannot be put back; the
            # default is the nearest.
            self._previous[signum] = signal.signal(signum, self._handle) or signal.SIG_DFL
        self._watcher = threading.Thread(target=self._watch, name="bokeh-stop", daemon=True)
        self._watcher.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pipe is None:
            return
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(-1 if self._previous_fd is None else self._previous_fd)
        read, write = self._pipe
        with contextlib.suppress(OSError):
            os.write(write, _CLOSE)
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        if self._watcher is None or not self._watcher.is_alive():
            os.close(read)
            os.close(write)
        self._pipe = None

    def _handle(self, signum: int, frame: Any) -> None:
        # Runs on the main thread when it next runs Python code; the watcher may have seen the
        # signal first. Either sets ``requested`` once.
        self._note(signal.Signals(signum))

    def _note(self, signum: signal.Signals) -> None:
        if self.requested is None:
            self.requested = signum

    # -- what the run tells the watcher

    @contextlib.contextmanager
    def uninterruptible(self, expected_s: float | None) -> Iterator[None]:
        """Around a call that no signal can cut short (one inference), with how long it is
        expected to take (None: not known yet). A first signal during it ends the process at
        once when the call would end after the budget: waiting would be in vain."""
        self._busy = (time.monotonic(), expected_s)
        try:
            yield
        finally:
            self._busy = None

    @contextlib.contextmanager
    def ending(self) -> Iterator[None]:
        """Held while the main thread prints the end of the run, so the watcher does not print
        it too (if it is already ending the process, this waits for that)."""
        with self._lock:
            self._ended = True
            yield

    def exit(self, code: int) -> None:
        """End the process after a stop: delete the temporary files of writes still under way
        (there are none after a run that ended by itself) and leave at once (``hard_exit``)."""
        abandon_partial_files()
        hard_exit(code)

    # -- the watcher

    def _watch(self) -> None:
        assert self._pipe is not None
        read = self._pipe[0]
        first: signal.Signals | None = None
        deadline = 0.0
        while True:
            timeout = None if first is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([read], [], [], timeout)
            if not ready:
                assert first is not None
                self._abandon(first, f"the run did not end within {self.budget_s:g} s: exiting")
                return
            for byte in os.read(read, 64):
                if byte == _CLOSE[0]:
                    return
                if byte not in {int(s) for s in STOP_SIGNALS}:
                    continue  # another signal with a Python handler (not ours)
                if first is not None:
                    self._abandon(first, f"a second {signal.Signals(byte).name}: exiting at once")
                    return
                self._note(signal.Signals(byte))
                first = self.requested or signal.Signals(byte)
                deadline = time.monotonic() + self.budget_s
                busy = self._busy
                if busy is not None and busy[1] is not None and busy[0] + busy[1] > deadline:
                    self._abandon(
                        first,
                        f"the batch in flight (about {busy[1]:.0f} s) would not end within "
                        f"{self.budget_s:g} s: abandoned",
                    )
                    return

    def _abandon(self, signum: signal.Signals, why: str) -> None:
        """End the process from the watcher thread: the summary (unless the main thread has
        printed it), no temporary file left, the signal's exit status."""
        printing = self._lock.acquire(timeout=PRINT_WAIT_S)
        try:
            if printing and not self._ended and self.on_abandon is not None:
                self._ended = True
                with contextlib.suppress(Exception):
                    self.on_abandon(signum, why)
        finally:
            self.exit(exit_status(signum))
