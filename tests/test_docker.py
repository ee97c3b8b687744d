"""docker/ checked statically, in seconds: it installs the way CI does and wires the server. The images are
built and run for real by tests/containers (slow, where podman runs)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKERFILES = [REPO / "docker" / "Dockerfile", REPO / "docker" / "Dockerfile.cuda"]


def test_images_install_through_the_ci_path():
    ci = (REPO / ".ci" / "run").read_text()
    makefile = (REPO / "Makefile").read_text()
    assert "make test" in ci and re.search(r"^test: setup$", makefile, re.M)  # CI's install is `make setup`
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text()
        assert re.search(r"^RUN .*make setup", text, re.M | re.S), dockerfile
        assert "FROM " in text and "COPY --chown=cnnlab:cnnlab . /app" in text
        assert "python3.11" in text or "python:3.11" in text  # the Python pyproject.toml requires


def test_cuda_image_swaps_only_the_torch_build():
    constraints = (REPO / ".ci" / "constraints.txt").read_text()
    assert "torch==2.13.0+cpu" in constraints
    cuda = (REPO / "docker" / "Dockerfile.cuda").read_text()
    assert "sed -i 's/^torch==.*/torch==2.13.0/' .ci/constraints.txt" in cuda


def test_images_run_as_an_unprivileged_user_and_need_no_git():
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text()
        users = re.findall(r"^USER (\S+)", text, re.M)
        assert users and users[-1] == "cnnlab", dockerfile  # the last USER is who runs the CMD
        assert text.index("USER cnnlab") < text.rindex(
            "make setup"
        )  # the environment is that user's (the last mention is the RUN)
        assert "dvc config --local core.no_scm true" in text  # .git is not in the context


def test_build_context_leaves_out_history_stores_data_outputs_and_secrets():
    # data/raw stays in: the pipeline's prepare stage depends on it (the image's `make run` failed without it)
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {
        ".git",
        ".venv",
        "mlruns",
        "mlflow.db",
        "mlartifacts",
        "data/prepared",
        "outputs",
        "multirun",
        "artifacts",
        ".env",
    } <= ignored


def test_compose_reads_the_passwords_from_an_uncommitted_env_file():
    text = (REPO / "docker" / "compose.yaml").read_text()
    example = (REPO / "docker" / ".env.example").read_text()
    values = dict(line.split("=", 1) for line in example.splitlines() if line and not line.startswith("#"))
    from cnnlab.tracking.server import DEFAULTS, REQUIRED

    assert set(REQUIRED) | set(DEFAULTS) | {"MLFLOW_S3_ENDPOINT_URL"} == set(
        values
    )  # every setting `make server` reads
    for value in {values["POSTGRES_PASSWORD"], values["AWS_SECRET_ACCESS_KEY"], "mlflow:mlflow@"}:
        assert value not in text  # no password in the committed file
    assert "docker/.env" in (REPO / ".gitignore").read_text().split()
    services = yaml.safe_load(text)["services"]
    required = "set it in docker/.env"
    for service, key, variable in [
        ("postgres", "POSTGRES_PASSWORD", "POSTGRES_PASSWORD"),
        ("mlflow", "POSTGRES_PASSWORD", "POSTGRES_PASSWORD"),
        ("s3", "MINIO_ROOT_PASSWORD", "AWS_SECRET_ACCESS_KEY"),
        ("mlflow", "AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
    ]:  # compose stops, naming the variable, when docker/.env lacks it
        assert services[service]["environment"][key] == f"${{{variable}:?{required}}}", (service, key)
    assert "MLFLOW_TRACKING_URI" in services["train"]["environment"]
    assert not any(k.startswith(("AWS_", "POSTGRES_")) for k in services["train"]["environment"])  # no secret


def test_compose_runs_what_make_server_runs_on_postgres_and_object_storage():
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "s3", "mlflow", "train"}
    mlflow = services["mlflow"]
    assert mlflow["command"][:3] == ["python", "-m", "cnnlab.tracking.server"]  # the launcher `make server` runs
    assert "cnnlab.tracking.server" in (REPO / "Makefile").read_text()
    assert {k: v for k, v in mlflow["environment"].items() if "${" not in v} == {
        "POSTGRES_HOST": "postgres",
        "POSTGRES_PORT": "5432",
        "MLFLOW_S3_ENDPOINT_URL": "http://s3:9000",
    }
    # only 127.0.0.1 is published
    ports = [port for service in services.values() for port in service.get("ports", [])]
    assert ports and all(port.startswith("127.0.0.1:") for port in ports)
    assert {name: dep["condition"] for name, dep in mlflow["depends_on"].items()} == {
        "postgres": "service_healthy",
        "s3": "service_healthy",
    }
    assert all("healthcheck" in services[name] for name in ("postgres", "s3", "mlflow"))
    assert services["train"]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    for name in ("mlflow", "train"):
        build = services[name]["build"]
        assert (REPO / "docker" / build["context"] / build["dockerfile"]).resolve().is_file()
    # the images are variables: registry images by default, the locally built ones by setting them
    assert services["postgres"]["image"] == "${POSTGRES_IMAGE:-postgres:16}"
    assert services["s3"]["image"] == "${S3_IMAGE:-minio/minio}"
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'server = ["psycopg2-binary' in pyproject and '"boto3' in pyproject and '"dvc-s3' in pyproject
