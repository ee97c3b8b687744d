"""The team set-up's services for tests, started for real on 127.0.0.1: a private PostgreSQL
cluster (the system package's initdb/pg_ctl), moto's S3 server, and `make server`'s MLflow server."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import BIN


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, ready, process: subprocess.Popen | None = None, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ready():
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited at start-up ({process.returncode})")
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not answer in {timeout} s")


def answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
        return True
    except OSError as err:
        return getattr(err, "code", None) is not None  # an HTTP error status is an answer


def postgres_bin() -> Path:
    """The system PostgreSQL's binaries (Debian: /usr/lib/postgresql/<version>/bin); skip if not installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or (
        [shutil.which("initdb")] if shutil.which("initdb") else []
    )
    if not found:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install -y postgresql; .ci/run installs it)")
    return Path(os.path.realpath(found[-1])).parent


class Postgres:
    """A private PostgreSQL cluster under `home` on a free port, with one user (password auth) and database.

    PostgreSQL refuses to run as root: as root it runs as the `postgres` system user the package creates."""

    def __init__(self, home: Path, user: str = "cnnlab", password: str = "pg-secret-7f3a", database: str = "mlflow"):
        self.home, self.user, self.password, self.database = Path(home), user, password, database
        self.port = free_port()
        self.bin = postgres_bin()
        self.data = self.home / "data"

    def _run(self, *argv: str) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=120, check=True)

    def start(self) -> "Postgres":
        self.home.mkdir(parents=True, exist_ok=True)
        pwfile = self.home / "pw"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            pwd.getpwnam("postgres")  # KeyError: the package's system user is missing
            shutil.chown(self.home, "postgres")
            shutil.chown(pwfile, "postgres")
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            self.user,
            "--pwfile",
            str(pwfile),
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
        )
        pwfile.unlink()
        options = f"-p {self.port} -k {self.home} -h 127.0.0.1 -c fsync=off"
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.home / "log"), "-w", "start"
        )
        import psycopg2

        connection = psycopg2.connect(
            host="127.0.0.1", port=self.port, user=self.user, password=self.password, dbname="postgres"
        )
        connection.autocommit = True
        connection.cursor().execute(f"CREATE DATABASE {self.database}")
        connection.close()
        return self

    def stop(self) -> None:
        if self.data.exists():
            subprocess.run(
                [
                    *(["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []),
                    str(self.bin / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-m",
                    "fast",
                    "-w",
                    "stop",
                ],
                capture_output=True,
                timeout=60,
            )


class S3Server:
    """moto's S3-compatible server (`moto_server`) on a free port of 127.0.0.1."""

    access_key, secret_key = "team-key", "s3-secret-91bd"

    def __init__(self, enforce_access_after: int | None = None):
        """With `enforce_access_after`: moto checks IAM permissions from that many requests on (the set-up's)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.env = {
            **os.environ,
            **({"INITIAL_NO_AUTH_ACTION_COUNT": str(enforce_access_after)} if enforce_access_after else {}),
        }

    def start(self) -> "S3Server":
        self.process = subprocess.Popen(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for("moto_server", lambda: answers(self.url), self.process)
        return self

    def client(self, service: str = "s3"):
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        )

    def stop(self) -> None:
        stop_process(self.process)


def stop_process(process: subprocess.Popen | None) -> None:
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
