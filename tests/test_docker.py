"""docker/ is checked statically (no engine here): it installs the way CI does and wires the server."""

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
        assert "FROM " in text and "COPY . /app" in text
        assert "python3.11" in text or "python:3.11" in text  # the Python pyproject.toml requires


def test_cuda_image_swaps_only_the_torch_build():
    constraints = (REPO / ".ci" / "constraints.txt").read_text()
    assert "torch==2.13.0+cpu" in constraints
    cuda = (REPO / "docker" / "Dockerfile.cuda").read_text()
    assert "sed -i 's/^torch==.*/torch==2.13.0/' .ci/constraints.txt" in cuda


def test_compose_runs_mlflow_on_postgres_and_the_trainer_logs_to_it():
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "mlflow", "train"}
    server = services["mlflow"]["command"]
    assert "--backend-store-uri postgresql+psycopg2://mlflow:mlflow@postgres:5432/mlflow" in server
    env = services["postgres"]["environment"]
    assert (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"]) == ("mlflow", "mlflow", "mlflow")
    assert services["mlflow"]["ports"] == ["127.0.0.1:5000:5000"]
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["train"]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    for name in ("mlflow", "train"):
        build = services[name]["build"]
        assert (REPO / "docker" / build["context"] / build["dockerfile"]).resolve().is_file()
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'server = ["psycopg2-binary' in pyproject  # the driver the server's URI names
