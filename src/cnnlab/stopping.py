"""A job told to stop: SIGTERM (a scheduler, `docker stop`, `kill`) or Ctrl-C, raised and recognised in one place."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator, Optional

from pytorch_lightning.utilities.exceptions import SIGTERMException


def stop_signal(err: BaseException) -> Optional[str]:
    """ "SIGINT" for Ctrl-C, "SIGTERM" for Lightning's SIGTERMException (a SystemExit without a code), else None."""
    if isinstance(err, KeyboardInterrupt):
        return "SIGINT"
    if isinstance(err, SIGTERMException):
        return "SIGTERM"
    return None


class SigtermUnlessLightningStops:
    """SIGTERM stops the job at once, as Lightning's SIGTERMException, so the run ends KILLED and the exit
    code says so: before fit (preparing), after it (logging outputs), and inside `trainer.fit` until
    Lightning installs its own handler. That handler (which calls this one too) stops at the next batch,
    so while it is installed this one does nothing. (A flag set just before `trainer.fit` lost a SIGTERM
    that came during fit's setup: Lightning installs its handler only after the model summary, and the
    job trained on to SIGKILL.)"""

    def __call__(self, signum, frame) -> None:
        if signal.getsignal(signal.SIGTERM) is self:  # not wrapped by Lightning's: nothing else will stop
            raise SIGTERMException()


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Install `SigtermUnlessLightningStops` for the block (a no-op outside the main thread, which alone gets
    signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = SigtermUnlessLightningStops()
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
