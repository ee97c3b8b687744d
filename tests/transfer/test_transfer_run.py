"""cnnlab-train model.weights=... end to end: each source kind lands in the run with its provenance;
a bad source exits 2 before any run opens."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from cnnlab.models import build_backbone
from tests.conftest import QUICK

BASE = (*QUICK, "model=simple_cnn", "data=digits", "scheduler=none")


def _runs(uri: str):
    client = MlflowClient(uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=10000)


def _run_of(output_dir: Path, uri: str):
    import json

    return MlflowClient(uri).get_run(json.loads((output_dir / "run.json").read_text())["run_id"])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def simple_cnn_file(tmp_path_factory) -> Path:
    """A simple_cnn state dict for 3-channel data and 5 classes (another dataset's), saved as a plain .pth."""
    path = tmp_path_factory.mktemp("weights") / "simple_cnn-rgb.pth"
    torch.save(build_backbone("simple_cnn", num_classes=5, in_channels=3, image_size=32).state_dict(), path)
    return path


def test_pth_file_new_head_grey_rule_and_imagenet_normalisation(call_cli, tracking_uri, tmp_path, simple_cnn_file):
    out = tmp_path / "ft"
    call_cli(
        "cnnlab-train", *BASE, f"model.weights={simple_cnn_file}", "finetune.freeze=backbone", f"hydra.run.dir={out}"
    )
    run = _run_of(out, tracking_uri)
    params = run.data.params
    assert params["weights.source"] == str(simple_cnn_file) and params["weights.kind"] == "torchvision"
    assert params["weights.sha256"] == _sha256(simple_cnn_file)
    assert params["weights.new_tensors"] == "2"  # classifier.4 (5 -> 10 classes)
    assert params["weights.loaded_tensors"] == str(len(torch.load(simple_cnn_file)) - 2)
    assert params["weights.channel_rule"] == "features.0.weight: summed 3 -> 1 channels"
    assert int(params["finetune.trainable_parameters"]) == 64 * 10 + 10 + sum(
        p.numel()
        for p in build_backbone("simple_cnn", num_classes=10, in_channels=1, image_size=32).classifier[2].parameters()
    )
    assert run.data.tags["cnnlab.weights"] == str(simple_cnn_file)
    hp = torch.load(out / "checkpoints" / "best.ckpt", weights_only=True)["hyper_parameters"]
    assert hp["mean"] == [pytest.approx(0.449)] and hp["std"] == [pytest.approx(0.226)]  # ImageNet's, to grey
    frozen = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"][
        "network.backbone.features.3.weight"
    ]
    assert torch.equal(frozen, torch.load(simple_cnn_file)["features.3.weight"])  # frozen: not moved by training

    again = tmp_path / "dataset-normalisation"
    call_cli(
        "cnnlab-train", *BASE, f"model.weights={simple_cnn_file}", "data.normalize=dataset", f"hydra.run.dir={again}"
    )
    hp = torch.load(again / "checkpoints" / "best.ckpt", weights_only=True)["hyper_parameters"]
    assert hp["mean"] != [pytest.approx(0.449)]


@pytest.mark.parametrize(
    "source, expected",
    [
        ("{tmp}/absent.pth", "no such file or directory"),
        ("{tmp}/garbage.pth", "not a readable PyTorch file"),
        ("{tmp}/module.pth", "needs code to load"),
        ("{rgb}", None),  # placeholder replaced below: the architecture case
    ],
    ids=["missing", "garbage", "pickled-module", "other-architecture"],
)
def test_bad_sources_exit_2_naming_the_source_and_leave_no_run(
    call_cli, tracking_uri, project, tmp_path, simple_cnn_file, source, expected
):
    (tmp_path / "garbage.pth").write_bytes(b"\x00" * 100)
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pth")
    overrides = list(BASE)
    if source == "{rgb}":
        source, expected = str(simple_cnn_file), "look like model=simple_cnn"
        overrides.append("model=lenet5")  # simple_cnn's weights on LeNet-5
    source = source.format(tmp=tmp_path)
    before = len(_runs(tracking_uri)) if (project / "mlflow.db").exists() else 0
    done = call_cli(
        "cnnlab-train", *overrides, f"model.weights={source}", f"hydra.run.dir={tmp_path / 'out'}", check=False
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"model.weights='{source}'" in done.stderr and expected in done.stderr
    runs = _runs(tracking_uri) if (project / "mlflow.db").exists() else []
    assert len(runs) == before and not [r for r in runs if r.info.status == "RUNNING"]


def test_unknown_stage_exits_2_listing_stages(call_cli, tmp_path):
    done = call_cli("cnnlab-train", *BASE, "finetune.freeze=stage9", f"hydra.run.dir={tmp_path}", check=False)
    assert done.returncode == 2
    assert "finetune.freeze='stage9'" in done.stderr and "stage1 (stride" in done.stderr and "stage3" in done.stderr


@pytest.mark.slow
def test_checkpoint_run_dir_and_mlflow_sources(call_cli, tracking_uri, tmp_path):
    pre = tmp_path / "pretrain"
    call_cli(
        "cnnlab-train",
        *BASE,
        "logger.log_model=true",
        "register=true",
        "logger.experiment_name=transfer-test",
        f"hydra.run.dir={pre}",
    )
    source_run = _run_of(pre, tracking_uri)
    state = torch.load(pre / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    registered = "cnnlab-classification-simple_cnn"  # other tests of the session may register versions too
    version = next(
        v.version
        for v in MlflowClient(tracking_uri).search_model_versions(f"name='{registered}'")
        if v.run_id == source_run.info.run_id
    )
    MlflowClient(tracking_uri).set_registered_model_alias(registered, "transfer-test", version)

    for name, source in [
        ("ckpt", str(pre / "checkpoints" / "best.ckpt")),
        ("dir", str(pre)),
        ("runs", f"runs:/{source_run.info.run_id}/model"),
        ("version", f"models:/{registered}/{version}"),
        ("alias", f"models:/{registered}@transfer-test"),
    ]:
        out = tmp_path / name
        call_cli(
            "cnnlab-train",
            *BASE,
            f"model.weights={source}",
            "finetune.freeze=stage2",
            "finetune.backbone_lr=0.0001",
            "trainer.max_epochs=1",
            f"hydra.run.dir={out}",
        )
        run = _run_of(out, tracking_uri)
        params = run.data.params
        assert params["weights.source"] == source
        assert params["weights.new_tensors"] == "0", name  # same classes: the head is kept too
        assert int(params["weights.loaded_tensors"]) == len([k for k in state if k.startswith("network.backbone.")])
        assert len(params["weights.sha256"]) == 64
        if name in ("ckpt", "dir"):
            assert params["weights.kind"] == "checkpoint" and params["weights.sha256"] == _sha256(
                pre / "checkpoints" / "best.ckpt"
            )
        else:
            assert params["weights.kind"] == "mlflow"
            assert run.data.tags["cnnlab.weights_run_id"] == source_run.info.run_id
        first = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"][
            "network.backbone.features.0.weight"
        ]
        assert torch.equal(first, state["network.backbone.features.0.weight"]), (
            name
        )  # stage1 frozen at the pretrained values

    done = call_cli(
        "cnnlab-train",
        *BASE,
        "model.weights=runs:/0123456789abcdef0123456789abcdef/model",
        f"hydra.run.dir={tmp_path / 'bad'}",
        check=False,
    )
    assert done.returncode == 2 and "model.weights='runs:/0123456789abcdef0123456789abcdef/model'" in done.stderr
    assert "there is no run '0123456789abcdef0123456789abcdef'" in done.stderr
