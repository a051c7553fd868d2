"""Reproducer: an OpenVINO backend released on another thread than the one that opened it, then
a Python signal handler on the opening thread, as a test run (or a program whose worker thread
drops the last reference) does it.

OpenVINO's CPU plugin gives the thread that loads it an alternate signal stack (an mmap'ed
``SigAltStackSetup``, openvinotoolkit/openvino#11894) and unmaps it in its destructor, putting
the previous stack back with ``sigaltstack``, which acts on the calling thread only. Python runs
its signal handlers on the alternate stack (``SA_ONSTACK`` since 3.10, bpo-43390). So a plugin
destroyed on another thread leaves the loading thread's alternate stack pointing at unmapped
memory, and the next handled signal there dies of SIGSEGV.

What it does: open ``GRAPH`` on OpenVINO on the main thread and render once; drop the backend
on a second thread (without ``close()``, as a garbage collection there would); print whether
the main thread's alternate signal stack is still mapped; handle a SIGUSR1 on the main thread.
Exit 0 and "handled SIGUSR1" printed: the process survived.
"""

from __future__ import annotations

import ctypes
import signal
import sys
import threading

import numpy as np

from dbsi.runtime.registry import open_backend


class StackT(ctypes.Structure):
    _fields_ = [
        ("ss_sp", ctypes.c_void_p),
        ("ss_flags", ctypes.c_int),
        ("ss_size", ctypes.c_size_t),
    ]


def alternate_stack() -> tuple[int, int]:
    """This thread's alternate signal stack: (address, size); (0, 0) when it has none."""
    current = StackT()
    if ctypes.CDLL(None, use_errno=True).sigaltstack(None, ctypes.byref(current)) != 0:
        raise OSError(ctypes.get_errno(), "sigaltstack")
    if current.ss_flags & 2:  # SS_DISABLE
        return 0, 0
    return current.ss_sp or 0, current.ss_size


def mapped(address: int, size: int) -> bool:
    """Whether [address, address + size) lies in one mapping of this process."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            start, end = (int(part, 16) for part in line.split()[0].split("-"))
            if start <= address and address + size <= end:
                return True
    return False


def main(graph: str) -> int:
    holder = [open_backend(graph, "openvino")]
    holder[0].run(np.zeros((1, 48, 64, 3), np.uint8))
    address, size = alternate_stack()
    print(f"alternate stack after loading: {'none' if not size else hex(address)}", flush=True)

    dropper = threading.Thread(target=holder.clear)
    dropper.start()
    dropper.join()
    address, size = alternate_stack()
    state = "none" if not size else ("mapped" if mapped(address, size) else "UNMAPPED")
    print(f"alternate stack after the backend was dropped on another thread: {state}", flush=True)

    handled = []
    signal.signal(signal.SIGUSR1, lambda signum, frame: handled.append(signum))
    signal.raise_signal(signal.SIGUSR1)
    print(f"handled {signal.Signals(handled[0]).name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
