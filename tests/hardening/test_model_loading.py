"""Loading a model runs no code from it: a crafted pt2 archive, and a pickled model, are refused."""

from __future__ import annotations

import io
import pathlib
import shutil
import zipfile

import pytest
import torch

from cnnlab.config import ConfigError
from cnnlab.prediction import predict
from cnnlab.tasks.classification import ClassificationTask
from cnnlab.tracking.model_registry import log_model
from cnnlab.tracking.run import TrackedRun
from tests.tasks.conftest import task_arguments

pytestmark = pytest.mark.slow  # end to end: run by `make test-slow` and CI, not by `make test`


class Payload:
    """Unpickling this creates a file: the stand-in for any code a crafted file could run."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def _replace_member(archive: pathlib.Path, suffix: str, data: bytes) -> None:
    with zipfile.ZipFile(archive) as source:
        members = [(info, source.read(info)) for info in source.infolist()]
    assert any(info.filename.endswith(suffix) for info, _ in members)
    with zipfile.ZipFile(archive, "w") as target:
        for info, content in members:
            target.writestr(info, data if info.filename.endswith(suffix) else content)


@pytest.fixture(scope="module")
def logged_model(tmp_path_factory):
    """A real cnnlab model logged to a store: (store URI, model URI, its artifact directory)."""
    home = tmp_path_factory.mktemp("store")
    store = f"sqlite:///{home / 'mlflow.db'}"
    task = ClassificationTask(**task_arguments("simple_cnn", num_classes=3, image_size=28, in_channels=1))
    run = TrackedRun.start(store, "loading", "crafted", {})
    model_uri = log_model(store, run.run_id, task, register_name="crafted")
    run.end()
    from cnnlab.tracking.model_registry import use_tracking_uri

    with use_tracking_uri(store):
        import mlflow

        model_dir = pathlib.Path(
            mlflow.artifacts.download_artifacts(artifact_uri="models:/crafted/1", dst_path=str(home / "local"))
        )
    return store, model_uri, model_dir


@pytest.fixture
def image(tmp_path):
    from PIL import Image

    path = tmp_path / "in" / "digit.png"
    path.parent.mkdir()
    Image.new("L", (28, 28), 128).save(path)
    return path


def test_the_untouched_model_predicts(logged_model, image, tmp_path):
    store, _, model_dir = logged_model
    for uri in ("models:/crafted/1", str(model_dir)):
        result = predict(uri, image, tmp_path / "out", store)
        assert len(result.rows) == 1 and not result.failed


@pytest.mark.parametrize("member", ["sample_inputs/model.pt", "weights/weight_0"])
def test_a_pickle_with_code_in_the_archive_is_refused_and_never_run(logged_model, image, tmp_path, member):
    store, _, model_dir = logged_model
    crafted = tmp_path / "model"
    shutil.copytree(model_dir, crafted)
    marker = tmp_path / "code-ran"
    buffer = io.BytesIO()
    torch.save({"inputs": Payload(marker)}, buffer)
    _replace_member(next(crafted.rglob("model.pt2")), member, buffer.getvalue())
    with pytest.raises(ConfigError, match=r"model.pt2: refused to load: .*could run code"):
        predict(str(crafted), image, tmp_path / "out", store)
    assert not marker.exists()


def test_a_pickled_pytorch_model_is_refused(logged_model, image, tmp_path):
    store, _, model_dir = logged_model
    crafted = tmp_path / "model"
    shutil.copytree(model_dir, crafted)
    next(crafted.rglob("model.pt2")).unlink()  # what a model saved with serialization_format=pickle lacks
    with pytest.raises(ConfigError, match="saved with pickle .* cnnlab loads only torch.export"):
        predict(str(crafted), image, tmp_path / "out", store)
