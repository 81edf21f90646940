"""Stopping cleanly on SIGTERM, the signal a preemptible machine gets before it is reclaimed.

`SigtermFlag` replaces the SIGTERM handler while training runs: the signal
only raises a flag. The trainer passes the flag into every step, where it is
all-reduced (maximum) over replicas and workers, so every worker learns of a
SIGTERM that reached any of them at the same step; they save one checkpoint
together and stop. The rerun of the same command resumes from it, losing no
step. (TensorFlow's `PreemptionCheckpointHandler` does the same through a
cluster coordination service; the all-reduced flag needs nothing beyond the
collectives that training already runs.)

The handler is installed only in the main thread (Python allows signal
handlers nowhere else); elsewhere the flag stays down and SIGTERM keeps its
default action.
"""
import signal
import threading


class SigtermFlag:
    """A context manager whose `raised` turns True once SIGTERM arrives.

    Example:
        >>> with SigtermFlag() as sigterm:
        ...     while not sigterm.raised:
        ...         step()
    """

    def __init__(self):
        self.raised = False
        self._previous = None

    def _handle(self, signum, frame):
        del signum, frame
        self.raised = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
        return False
