"""The team's MLflow server (`make server`, docker/compose.yaml): PostgreSQL holds runs and the model
registry, S3-compatible object storage (MinIO, AWS S3, ...) holds artifacts, served through the
server so users need no storage credentials of their own to log.

Settings come from the environment, else an env file (docker/.env, git-ignored; docker/.env.example
lists them); never from the repository. Before starting, the database and the bucket are checked so
a wrong password or a missing bucket is one clear line, not a server that starts and then fails
every request. The database URI (with its password) reaches `mlflow server` through its environment,
never its command line, where `ps` would show it.

    python -m cnnlab.tracking.server [--env-file docker/.env] [--host 127.0.0.1] [--port 5000] [--create-bucket]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Mapping, Optional
from urllib.parse import quote

from cnnlab.config import ConfigError
from cnnlab.tracking.store import redact

REQUIRED = ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
DEFAULTS = {"POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": "5432", "CNNLAB_BUCKET": "cnnlab"}
ARTIFACT_PREFIX = "mlflow"  # s3://<bucket>/mlflow: the server's artifacts; s3://<bucket>/dvc: DVC's remote


def load_settings(env_file: Optional[Path], environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The server's settings: DEFAULTS < the env file < the environment; ConfigError naming what is missing."""
    from dotenv import dotenv_values  # here and below: the team set-up's own packages, imported by its commands

    settings = dict(DEFAULTS)
    if env_file is not None:
        if not Path(env_file).is_file():
            raise ConfigError(
                f"env file {env_file} not found: copy docker/.env.example to it and fill it in (it stays out of git)"
            )
        settings.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    settings.update({k: v for k, v in environ.items() if k in (*REQUIRED, *DEFAULTS, "MLFLOW_S3_ENDPOINT_URL")})
    missing = [name for name in REQUIRED if not settings.get(name)]
    if missing:
        where = f"{env_file} or the environment" if env_file else "the environment"
        raise ConfigError(
            f"the team server needs {', '.join(missing)}: set them in {where} (docker/.env.example lists every setting)"
        )
    return settings


def backend_uri(settings: Mapping[str, str]) -> str:
    user, password = quote(settings["POSTGRES_USER"], safe=""), quote(settings["POSTGRES_PASSWORD"], safe="")
    return f"postgresql+psycopg2://{user}:{password}@{settings['POSTGRES_HOST']}:{settings['POSTGRES_PORT']}/{settings['POSTGRES_DB']}"


def artifacts_destination(settings: Mapping[str, str]) -> str:
    return f"s3://{settings['CNNLAB_BUCKET']}/{ARTIFACT_PREFIX}"


def check_database(settings: Mapping[str, str], timeout: int = 5) -> None:
    """ConfigError (no password in it) unless PostgreSQL answers and takes these credentials."""
    import psycopg2  # cnnlab[server]: installed only for the team set-up

    where = (
        f"PostgreSQL at {settings['POSTGRES_HOST']}:{settings['POSTGRES_PORT']} "
        f"(database {settings['POSTGRES_DB']!r}, user {settings['POSTGRES_USER']!r})"
    )
    try:
        psycopg2.connect(
            host=settings["POSTGRES_HOST"],
            port=int(settings["POSTGRES_PORT"]),
            dbname=settings["POSTGRES_DB"],
            user=settings["POSTGRES_USER"],
            password=settings["POSTGRES_PASSWORD"],
            connect_timeout=timeout,
        ).close()
    except psycopg2.OperationalError as err:
        reason = " ".join(str(err).replace(settings["POSTGRES_PASSWORD"], "***").split())[:300]
        raise ConfigError(f"{where} refused the connection: {reason}; check POSTGRES_* in the env file") from None


def s3_client(settings: Mapping[str, str]):
    import boto3  # cnnlab[server]
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=settings.get("MLFLOW_S3_ENDPOINT_URL") or None,
        aws_access_key_id=settings["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=settings["AWS_SECRET_ACCESS_KEY"],
        config=Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 2}),
    )


def check_bucket(settings: Mapping[str, str], create: bool = False) -> None:
    """ConfigError unless the bucket exists (created first with `create`) and takes these credentials."""
    from botocore.exceptions import BotoCoreError, ClientError  # cnnlab[server]

    bucket, endpoint = settings["CNNLAB_BUCKET"], settings.get("MLFLOW_S3_ENDPOINT_URL") or "AWS S3"
    client = s3_client(settings)
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        if code in ("404", "NoSuchBucket") and create:
            client.create_bucket(Bucket=bucket)
            return
        if code in ("404", "NoSuchBucket"):
            raise ConfigError(
                f"bucket {bucket!r} does not exist at {endpoint}: create it (or run with --create-bucket), or set "
                "CNNLAB_BUCKET"
            ) from None
        raise ConfigError(
            f"bucket {bucket!r} at {endpoint} refused access ({code}): check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
        ) from None
    except BotoCoreError as err:
        raise ConfigError(
            f"the object storage at {endpoint} does not answer ({err}); check MLFLOW_S3_ENDPOINT_URL"
        ) from None


def server_command(
    settings: Mapping[str, str], host: str, port: int, workers: int, allowed_hosts: Optional[str] = None
) -> tuple[list[str], dict[str, str]]:
    """`mlflow server`'s argv and environment (the database URI and storage credentials go in the environment)."""
    mlflow = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    argv = [
        mlflow,
        "server",
        "--artifacts-destination",
        artifacts_destination(settings),
        "--serve-artifacts",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
        *(["--allowed-hosts", allowed_hosts] if allowed_hosts else []),
    ]
    env = {
        **os.environ,
        "MLFLOW_BACKEND_STORE_URI": backend_uri(settings),
        "AWS_ACCESS_KEY_ID": settings["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": settings["AWS_SECRET_ACCESS_KEY"],
    }
    if settings.get("MLFLOW_S3_ENDPOINT_URL"):
        env["MLFLOW_S3_ENDPOINT_URL"] = settings["MLFLOW_S3_ENDPOINT_URL"]
    return argv, env


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="make server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-file", type=Path, default=None, help="settings file (default: docker/.env if it exists)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (0.0.0.0 to serve the team's network)"
    )
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--create-bucket", action="store_true", help="create CNNLAB_BUCKET if it does not exist")
    parser.add_argument(
        "--allowed-hosts",
        default=None,
        help="host names clients may reach the server by (MLflow's --allowed-hosts; default: localhost and private "
        "IPs), e.g. mlflow,mlflow:5000 for a compose service",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=0,
        help="seconds to keep retrying the database and storage checks (services starting beside it)",
    )
    args = parser.parse_args(argv)
    env_file = args.env_file or (Path("docker/.env") if Path("docker/.env").is_file() else None)
    try:
        settings = load_settings(env_file)
        deadline = time.monotonic() + args.wait
        while True:
            try:
                check_database(settings)
                check_bucket(settings, create=args.create_bucket)
                break
            except ConfigError as err:
                if time.monotonic() >= deadline:
                    raise
                print(f"make server: waiting for the database and storage ({redact(str(err))[:160]})", flush=True)
                time.sleep(2)
    except ConfigError as err:
        print(f"make server: {redact(str(err))}", file=sys.stderr)
        sys.exit(2)
    command, env = server_command(settings, args.host, args.port, args.workers, args.allowed_hosts)
    print(
        f"MLflow server on http://{args.host}:{args.port}: runs in {redact(backend_uri(settings))}, "
        f"artifacts in {artifacts_destination(settings)}",
        flush=True,
    )
    os.execve(command[0], command, env)


if __name__ == "__main__":
    main()
