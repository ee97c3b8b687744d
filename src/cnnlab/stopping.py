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


class SigtermOutsideFit:
    """SIGTERM before or after fit (while preparing, logging outputs) stops the job at once, as
    Lightning's SIGTERMException, so the run ends KILLED and the exit code says so; inside fit
    Lightning's own handler (which calls this one too) stops it at the next batch."""

    fitting = False

    def __call__(self, signum, frame) -> None:
        if not self.fitting:
            raise SIGTERMException()


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[SigtermOutsideFit]:
    """Install `SigtermOutsideFit` for the block; set its `fitting` while Lightning's fit runs."""
    handler = SigtermOutsideFit()
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield handler
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield handler
    finally:
        signal.signal(signal.SIGTERM, previous)
