"""finetune.*: what each freeze mode freezes, optimizer groups, frozen BatchNorm, unfreezing."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from cnnlab.config import ConfigError
from cnnlab.finetune import Finetuning, frozen_parameter_names, parameter_counts
from cnnlab.tasks.classification import ClassificationTask

MODEL = {
    "_target_": "cnnlab.models.build_backbone",
    "name": "resnet18",
    "width_mult": 0.25,
    "small_input": True,
    "weights": None,
}


def make_task(backbone_lr=None, scheduler=None) -> ClassificationTask:
    torch.manual_seed(0)
    return ClassificationTask(
        model=MODEL,
        num_classes=3,
        in_channels=1,
        image_size=16,
        optimizer={"_target_": "torch.optim.SGD", "lr": 0.1, "momentum": 0.9},
        scheduler=scheduler,
        backbone_lr=backbone_lr,
    )


class Noise(Dataset):
    def __len__(self):
        return 32

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return {"image": torch.randn(1, 16, 16, generator=g) * 2 + 1, "label": torch.tensor(i % 3)}


def fit(task, callback, epochs=1):
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
        limit_val_batches=0,
    )
    trainer.fit(task, DataLoader(Noise(), batch_size=8))
    return trainer


def bn_buffers(module):
    return {k: v.clone() for k, v in module.state_dict().items() if "running" in k}


def test_requires_grad_per_mode():
    task = make_task()
    example = task.example_input_array
    backbone = set(n for n, _ in task.backbone.named_parameters())
    assert frozen_parameter_names(task.backbone, "none", example) == set()
    body = frozen_parameter_names(task.backbone, "backbone", example)
    assert body == backbone - {"fc.weight", "fc.bias"}
    stage2 = frozen_parameter_names(task.backbone, "stage2", example)
    assert "conv1.weight" in stage2 and "layer2.1.conv2.weight" in stage2
    assert not any(n.startswith(("layer3", "layer4", "fc")) for n in stage2)
    stage1 = frozen_parameter_names(task.backbone, "stage1", example)
    assert stage1 < stage2 < body


def test_unknown_stage_lists_the_valid_ones():
    task = make_task()
    with pytest.raises(ConfigError) as err:
        frozen_parameter_names(task.backbone, "stage7", task.example_input_array)
    message = str(err.value)
    assert "finetune.freeze='stage7'" in message
    assert all(f"stage{i}" in message for i in range(1, 5)) and "none, backbone" in message


def test_frozen_backbone_trains_only_the_head_and_bn_statistics_stay():
    task = make_task()
    before = {k: v.clone() for k, v in task.backbone.state_dict().items()}
    callback = Finetuning("backbone")
    fit(task, callback)
    after = task.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("fc.")), "a frozen tensor moved"
    assert not torch.equal(before["fc.weight"], after["fc.weight"]), "the head did not train"
    counts = parameter_counts(task)
    assert counts["trainable"] == task.backbone.fc.weight.numel() + task.backbone.fc.bias.numel()
    assert callback.counts == counts
    assert [p.requires_grad for p in task.backbone.layer1.parameters()] == [False] * len(
        list(task.backbone.layer1.parameters())
    )


def test_frozen_stage_keeps_its_bn_statistics_while_deeper_ones_move():
    task = make_task()
    shallow, deep = bn_buffers(task.backbone.layer1), bn_buffers(task.backbone.layer3)
    fit(task, Finetuning("stage1"))
    assert all(torch.equal(v, bn_buffers(task.backbone.layer1)[k]) for k, v in shallow.items())
    assert any(not torch.equal(v, bn_buffers(task.backbone.layer3)[k]) for k, v in deep.items())
    assert task.backbone.layer1[0].bn1.track_running_stats  # eval-mode statistics, not batch statistics


def test_unfreeze_at_epoch_makes_everything_trainable():
    task = make_task()
    callback = Finetuning("backbone", unfreeze_at_epoch=1)
    stem = task.backbone.conv1.weight.detach().clone()
    fit(task, callback, epochs=2)
    assert all(p.requires_grad for p in task.parameters())
    assert not torch.equal(stem, task.backbone.conv1.weight), "unfrozen at epoch 1 but never trained"


def test_backbone_lr_gives_two_param_groups_and_one_cycle_peaks_per_group():
    task = make_task(backbone_lr=0.01)
    groups = task.parameter_groups()
    assert [g["name"] for g in groups] == ["head", "backbone"]
    assert {id(p) for p in groups[1]["params"]} == {
        id(p) for n, p in task.backbone.named_parameters() if not n.startswith("fc.")
    }
    assert sum(len(g["params"]) for g in groups) == len(list(task.parameters()))
    scheduler = {"interval": "step", "scheduler": {"_target_": "torch.optim.lr_scheduler.OneCycleLR", "max_lr": 0.1}}
    task = make_task(backbone_lr=0.01, scheduler=scheduler)
    trainer = fit(task, Finetuning("none"))
    optimizer = trainer.optimizers[0]
    assert [g["max_lr"] for g in optimizer.param_groups] == [pytest.approx(0.1), pytest.approx(0.01)]
    assert len(make_task().parameter_groups()) == 1
