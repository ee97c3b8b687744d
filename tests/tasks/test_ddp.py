"""Every task trains under two-process CPU DDP (gloo): each parameter of the network gets a gradient
(Lightning's DDP stops at the first step otherwise), and rank 0 writes one finished MLflow run."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import QUICK

pytestmark = pytest.mark.slow

# the failing command (resnet18 with the small-input stem), narrowed to seconds a run
TINY = (
    "data=shapes",
    "data.source.num_samples=120",
    "data.image_size=32",
    "data.batch_size=8",
    "model=resnet18",
    "model.small_input=true",
    "model.width_mult=0.25",
    "augment=none",
    "trainer=ddp",
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    *QUICK[1:],
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.max_epochs=1",
)
VAL_METRIC = {"classification": "val/acc", "localization": "val/box_iou", "segmentation": "val/miou"}


@pytest.mark.parametrize("task", sorted(VAL_METRIC))
def test_every_task_trains_under_two_process_cpu_ddp(task, run_cli, project, tracking_uri):
    out = project / "runs" / f"ddp-{task}"
    run_cli("cnnlab-train", f"task={task}", *TINY, f"logger.run_name=ddp-{task}", f"hydra.run.dir={out}")
    run = MlflowClient(tracking_uri).get_run(json.loads((out / "run.json").read_text())["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["trainer.strategy"] == "ddp" and run.data.params["trainer.devices"] == "2"
    assert VAL_METRIC[task] in run.data.metrics and "train/loss_epoch" in run.data.metrics
