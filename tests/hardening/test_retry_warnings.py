"""A tracking server that does not answer is cnnlab's one line, not a urllib3 "Retrying (...)" warning
per retry of every call (15 of them for one outage)."""

from __future__ import annotations

import subprocess
import sys

from tests.hardening.servers import free_port

CALLS = """
import logging, os
logging.basicConfig(level=logging.INFO)
from cnnlab.tracking.store import HTTP_DEFAULTS, client
os.environ.update(HTTP_DEFAULTS, MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="0")
for _ in range(2):
    try:
        client(sys.argv[1]).get_run("0" * 32)
    except Exception as err:
        print("failed:", type(err).__name__, file=sys.stderr)
"""


def test_retries_against_a_dead_server_print_no_urllib3_warnings(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run(
        [sys.executable, "-c", "import sys\n" + CALLS, url], capture_output=True, text=True, timeout=120
    )
    assert done.stderr.count("failed:") == 2, done.stderr[-3000:]
    assert "Retrying (" not in done.stderr, done.stderr[-3000:]
