#!/usr/bin/env python3
"""PID 1 of cnnlab's images: runs the command, passes SIGTERM/SIGINT/SIGHUP to its whole process group, and
exits only when every process has ended.

`docker stop` signals PID 1 alone. With `make run` there, make took the SIGTERM and dvc and cnnlab-train
never saw it; with tini -g they did, but tini exited as soon as make did, and the kernel killed the training
before it could mark its MLflow run KILLED. Here the orphans (reparented to PID 1) are waited for too.
"""

import os
import signal
import subprocess
import sys


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: init.py COMMAND [ARGS...]", file=sys.stderr)
        return 2
    try:
        child = subprocess.Popen(sys.argv[1:], start_new_session=True)  # its own process group, pgid = its pid
    except OSError as err:
        print(f"error: cannot run {sys.argv[1]!r}: {err.strerror}", file=sys.stderr)
        return 127

    def forward(signum, _frame):
        try:
            os.killpg(child.pid, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    status = child.wait()
    while True:  # the command's descendants, reparented to PID 1 when their parent ended first
        try:
            os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
    return 128 - status if status < 0 else status


if __name__ == "__main__":
    sys.exit(main())
