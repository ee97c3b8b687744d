"""The team set-up for real: `make server`'s MLflow server on a private PostgreSQL with artifacts in
an S3-compatible server (moto), a training run and a sweep logged there, the champion served from
its registry, DVC's remote in the same storage; credentials only in the server's environment."""

from __future__ import annotations

import csv
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from tests.conftest import BIN, QUICK, call_in_process, cli_env, copy_project
from tests.team.services import Postgres, S3Server, answers, free_port, stop_process, wait_for

pytestmark = pytest.mark.slow

BUCKET = "cnnlab"
CHAMPION = "models:/cnnlab-classification-lenet5@champion"


def server_env(pg: Postgres, s3: S3Server, **changes: str) -> dict[str, str]:
    """An env file's settings (docker/.env.example's names) for `make server`."""
    return {
        "POSTGRES_USER": pg.user,
        "POSTGRES_PASSWORD": pg.password,
        "POSTGRES_DB": pg.database,
        "POSTGRES_HOST": "127.0.0.1",
        "POSTGRES_PORT": str(pg.port),
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
        "MLFLOW_S3_ENDPOINT_URL": s3.url,
        "CNNLAB_BUCKET": BUCKET,
        **changes,
    }


def launch(env_file: Path, port: int, *options: str, **popen) -> subprocess.Popen:
    """What `make server ENV_FILE=<env_file> PORT=<port>` runs, from an environment without the team's secrets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_", "POSTGRES_", "CNNLAB_"))}
    argv = [
        sys.executable,
        "-m",
        "cnnlab.tracking.server",
        "--env-file",
        str(env_file),
        "--port",
        str(port),
        "--workers",
        "1",
        *options,
    ]
    return subprocess.Popen(argv, env=env, text=True, **popen)


def write_env_file(path: Path, settings: dict[str, str]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    return path


@pytest.fixture(scope="module")
def team():
    home = Path(tempfile.mkdtemp(prefix="cnnlab-team-"))
    home.chmod(0o755)  # PostgreSQL runs as its own user (as root: `postgres`), which must reach its directory
    pg, s3, server = Postgres(home / "pg"), S3Server(), None
    try:
        pg.start()
        s3.start()
        s3.client().create_bucket(Bucket=BUCKET)
        env_file = write_env_file(home / "team.env", server_env(pg, s3))
        port = free_port()
        server = launch(env_file, port, stdout=open(home / "server.log", "w"), stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        wait_for("the team's MLflow server", lambda: answers(f"{url}/health"), server, timeout=180)
        yield {"url": url, "pg": pg, "s3": s3, "home": home, "env_file": env_file}
    finally:
        stop_process(server)
        s3.stop()
        pg.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def logged(team, tmp_path_factory):
    """A training (model registered, evaluated -> @champion) and a 2-job sweep, logged to the team server
    by a user whose environment names the server only (no database or storage credentials)."""
    root = copy_project(tmp_path_factory.mktemp("member"))
    url, out = team["url"], root / "runs" / "one"
    done = call_in_process(
        "cnnlab-train",
        [*QUICK, "logger.log_model=true", "register=true", f"hydra.run.dir={out}"],
        root,
        MLFLOW_TRACKING_URI=url,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    done = call_in_process(
        "cnnlab-evaluate",
        [f"evaluate.train_dir={out}", f"evaluate.output_dir={out}/evaluation"],
        root,
        MLFLOW_TRACKING_URI=url,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    done = call_in_process(
        "cnnlab-train",
        ["-m", *QUICK, "optimizer.lr=0.001,0.002", f"hydra.sweep.dir={root / 'sweep'}"],
        root,
        MLFLOW_TRACKING_URI=url,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {"root": root, "out": out, "run_id": json.loads((out / "run.json").read_text())["run_id"]}


def test_runs_land_in_postgres_and_artifacts_in_the_bucket(team, logged):
    client = MlflowClient(team["url"])
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)  # training, sweep parent, 2 children
    parent = next(r for r in runs if r.data.tags.get("cnnlab.role") == "sweep")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.params["optimizer.lr"] for r in children) == ["0.001", "0.002"]
    assert parent.data.tags["best_child_run_id"] in {r.info.run_id for r in children}
    training = client.get_run(logged["run_id"])
    assert {i.dataset.name for i in training.inputs.dataset_inputs} == {"digits-32", "digits-32/test"}
    assert "test/acc" in training.data.metrics

    import psycopg2  # the runs really are in PostgreSQL

    pg = team["pg"]
    with psycopg2.connect(host="127.0.0.1", port=pg.port, user=pg.user, password=pg.password, dbname=pg.database) as db:
        cursor = db.cursor()
        cursor.execute("SELECT run_uuid, status FROM runs")
        assert dict(cursor.fetchall()) == {r.info.run_id: "FINISHED" for r in runs}

    keys = [
        o["Key"]
        for page in team["s3"].client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="mlflow/")
        for o in page.get("Contents", [])
    ]
    run_keys = [k for k in keys if f"/{logged['run_id']}/artifacts/" in k]
    assert any(k.endswith("/artifacts/config.yaml") for k in run_keys) and any(
        k.endswith("checkpoints/best.ckpt") for k in run_keys
    )
    assert any(k.endswith("evaluation/metrics.json") for k in run_keys)
    (model,) = client.search_logged_models(
        experiment_ids=[training.info.experiment_id], filter_string=f"source_run_id = '{logged['run_id']}'"
    )
    assert any(f"/models/{model.model_id}/artifacts/MLmodel" in k for k in keys)  # the model beside the run's artifacts
    assert client.get_experiment(training.info.experiment_id).artifact_location.startswith("mlflow-artifacts:")
    assert not (logged["root"] / "mlruns").exists() and not (logged["root"] / "mlflow.db").exists()  # nothing local


def scans_of_test_split(logged, directory: Path, count: int) -> Path:
    """The first `count` test images of the trained run's prepared data, as PNG files in `directory`."""
    prepared = logged["root"] / json.loads((logged["out"] / "run.json").read_text())["prepared_dir"]
    images, test_split = np.load(prepared / "images.npy")[..., 0], np.load(prepared / "splits.npz")["test"]
    directory.mkdir()
    for index in test_split[:count]:
        Image.fromarray(images[index]).save(directory / f"{index:04d}.png")
    return directory


def test_champion_is_served_from_the_team_registry(team, logged, tmp_path):
    inputs = scans_of_test_split(logged, tmp_path / "scans", 3)
    out = tmp_path / "predictions"
    done = call_in_process(
        "cnnlab-predict",
        [f"model_uri={CHAMPION}", f"input={inputs}", f"output_dir={out}"],
        logged["root"],
        MLFLOW_TRACKING_URI=team["url"],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert len(rows) == 3 and all(r["label"] in [str(d) for d in range(10)] and r["error"] == "" for r in rows)


def test_credentials_appear_in_no_param_tag_or_artifact(team, logged, tmp_path):
    secrets = [team["pg"].password, team["s3"].secret_key]
    client = MlflowClient(team["url"])
    for run in client.search_runs([e.experiment_id for e in client.search_experiments()]):
        text = json.dumps([run.data.params, run.data.tags, run.info.artifact_uri])
        assert not any(secret in text for secret in secrets)
    downloaded = Path(client.download_artifacts(logged["run_id"], "", str(tmp_path)))
    for path in [*downloaded.rglob("*"), *logged["root"].rglob("*")]:
        if path.is_file() and path.stat().st_size < 5_000_000:
            content = path.read_bytes()
            assert not any(secret.encode() in content for secret in secrets), path


def test_dvc_remote_in_the_same_storage_restores_byte_identical_data(team, tmp_path):
    from tests.conftest import dvc_project

    root = dvc_project(tmp_path / "repo", lambda params: None)
    s3 = team["s3"]
    env = {
        **cli_env(root),
        "DVC_NO_ANALYTICS": "1",
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
    }

    def dvc(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "dvc"), *args], cwd=root, env=env, capture_output=True, text=True, timeout=600)

    for args in (
        ("remote", "add", "-d", "team", f"s3://{BUCKET}/dvc"),
        ("remote", "modify", "team", "endpointurl", s3.url),
        ("repro", "prepare"),
        ("push",),
    ):
        done = dvc(*args)
        assert done.returncode == 0, done.stderr[-3000:]
    prepared = root / "data/prepared/pipeline"
    before = {p.name: p.read_bytes() for p in prepared.iterdir()}
    # a remote whose bucket does not exist: a clear failure, nothing lost locally
    for args in (
        ("remote", "add", "nowhere", "s3://no-such-bucket/dvc"),
        ("remote", "modify", "nowhere", "endpointurl", s3.url),
    ):
        assert dvc(*args).returncode == 0
    failed = dvc("push", "-r", "nowhere")
    assert failed.returncode != 0 and "The specified bucket does not exist" in failed.stderr, failed.stderr[
        -2000:
    ]  # DVC's own words
    assert {p.name: p.read_bytes() for p in prepared.iterdir()} == before
    assert any(o["Key"].startswith("dvc/") for o in s3.client().list_objects_v2(Bucket=BUCKET)["Contents"])
    shutil.rmtree(prepared)
    shutil.rmtree(root / ".dvc/cache")
    done = dvc("pull", "prepare")
    assert done.returncode == 0, done.stderr[-3000:]
    assert {p.name: p.read_bytes() for p in prepared.iterdir()} == before
    assert s3.secret_key not in (root / ".dvc/config").read_text()  # credentials stay in the environment


def test_a_read_only_dvc_remote_fails_the_push_clearly_and_keeps_local_data(tmp_path):
    """A team member whose storage keys may read but not write: `dvc push` says so, nothing local is lost."""
    from tests.conftest import dvc_project

    s3 = S3Server(
        enforce_access_after=5
    ).start()  # its start-up check and the 4 set-up requests below, then IAM decides
    try:
        s3.client().create_bucket(Bucket="readonly-remote")
        iam = s3.client("iam")
        iam.create_user(UserName="reader")
        read_only = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"}],
        }
        iam.put_user_policy(UserName="reader", PolicyName="read-only", PolicyDocument=json.dumps(read_only))
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        root = dvc_project(tmp_path / "repo", lambda params: None)
        env = {
            **cli_env(root),
            "DVC_NO_ANALYTICS": "1",
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        }

        def dvc(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [str(BIN / "dvc"), *args], cwd=root, env=env, capture_output=True, text=True, timeout=600
            )

        for args in (
            ("remote", "add", "-d", "team", "s3://readonly-remote/dvc"),
            ("remote", "modify", "team", "endpointurl", s3.url),
            ("repro", "prepare"),
        ):
            done = dvc(*args)
            assert done.returncode == 0, done.stderr[-3000:]
        prepared = root / "data/prepared/pipeline"
        before = {p.name: p.read_bytes() for p in prepared.iterdir()}
        started = time.time()
        failed = dvc("push")
        assert failed.returncode != 0 and time.time() - started < 120
        assert "Access Denied" in failed.stderr or "AccessDenied" in failed.stderr, failed.stderr[-2000:]
        assert {p.name: p.read_bytes() for p in prepared.iterdir()} == before
        assert (
            dvc("status", "--cloud").returncode == 0
        )  # reading the remote still works: it lists what is missing there
    finally:
        s3.stop()


def test_a_server_that_does_not_answer_fails_in_seconds_naming_it(tmp_path):
    root = copy_project(tmp_path / "proj")
    dead = f"http://127.0.0.1:{free_port()}"
    started = time.time()
    done = call_in_process("cnnlab-train", [*QUICK, f"hydra.run.dir={root / 'run'}"], root, MLFLOW_TRACKING_URI=dead)
    assert done.returncode == 2 and time.time() - started < 30
    assert f"the MLflow tracking server at {dead} does not answer" in done.stderr
    assert not (root / "mlflow.db").exists()


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"POSTGRES_PASSWORD": "wrong-password-3c1"}, "password authentication failed"),
        ({"CNNLAB_BUCKET": "no-such-bucket"}, "bucket 'no-such-bucket' does not exist at http://127.0.0.1:"),
    ],
)
def test_wrong_database_credentials_or_a_missing_bucket_stop_the_server_with_one_line(team, change, expected):
    env_file = write_env_file(team["home"] / "bad.env", server_env(team["pg"], team["s3"], **change))
    started = time.time()
    done = launch(env_file, free_port(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = done.communicate(timeout=60)
    assert done.returncode == 2 and time.time() - started < 30, stdout + stderr
    assert expected in stderr and stderr.startswith("make server: ") and len(stderr.strip().splitlines()) == 1
    assert "wrong-password-3c1" not in stderr and team["pg"].password not in stderr


def test_with_wait_the_server_retries_then_says_what_is_missing(team):
    """--wait (compose starts the database and the store beside it): retried, then the same one line."""
    env_file = write_env_file(team["home"] / "late.env", server_env(team["pg"], team["s3"], CNNLAB_BUCKET="late"))
    started = time.time()
    done = launch(env_file, free_port(), "--wait", "4", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = done.communicate(timeout=60)
    assert done.returncode == 2 and 4 <= time.time() - started < 40, stdout + stderr
    assert stdout.count("make server: waiting for the database and storage") >= 2
    assert stderr.startswith("make server: bucket 'late' does not exist") and len(stderr.strip().splitlines()) == 1


def test_a_client_whose_host_name_the_server_refuses_gets_one_line(team, tmp_path):
    """MLflow 3 answers only the host names it is told (--allowed-hosts): a training names the refused one."""
    env_file = write_env_file(team["home"] / "hosts.env", server_env(team["pg"], team["s3"]))
    port = free_port()
    server = launch(env_file, port, "--allowed-hosts", "mlflow.example", stdout=subprocess.DEVNULL)
    try:
        wait_for("the server", lambda: answers(f"http://127.0.0.1:{port}/health"), server, timeout=120)
        root = copy_project(tmp_path / "proj")
        uri = f"http://127.0.0.1:{port}"
        done = call_in_process("cnnlab-train", [*QUICK, f"hydra.run.dir={root / 'run'}"], root, MLFLOW_TRACKING_URI=uri)
        assert done.returncode == 2, done.stderr[-2000:]
        (line,) = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert f"the MLflow tracking server at {uri} refuses the host name '127.0.0.1:{port}'" in line
        assert "--allowed-hosts" in line and "Traceback" not in done.stderr
    finally:
        stop_process(server)


def test_mlflow_models_serve_answers_like_cnnlab_predict(team, logged, tmp_path):
    """The champion behind MLflow's own REST server, for anyone without cnnlab installed (README: "Serving")."""
    import urllib.request

    inputs = scans_of_test_split(logged, tmp_path / "scans", 4)
    done = call_in_process(
        "cnnlab-predict",
        [f"model_uri={CHAMPION}", f"input={inputs}", f"output_dir={tmp_path / 'out'}"],
        logged["root"],
        MLFLOW_TRACKING_URI=team["url"],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "out" / "predictions.csv")))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CNNLAB_"))}
    env.update(MLFLOW_TRACKING_URI=team["url"], PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    request = subprocess.run(
        [sys.executable, "-m", "cnnlab.prediction", CHAMPION, str(inputs)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=300,
        check=True,
    ).stdout  # what the README pipes to curl
    port = free_port()
    server = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            CHAMPION,
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            "1",
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for("mlflow models serve", lambda: answers(f"{url}/ping"), server, timeout=180)
        post = urllib.request.Request(f"{url}/invocations", data=request, headers={"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(post, timeout=60).read())
    finally:
        stop_process(server)
    probabilities = np.asarray(answer["predictions"])
    assert probabilities.shape == (4, 10)
    classes = [str(d) for d in range(10)]
    for row, served in zip(rows, probabilities):
        assert row["label"] == classes[int(served.argmax())]
        assert float(row["score"]) == pytest.approx(float(served.max()), abs=1e-4)
