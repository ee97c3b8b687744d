"""Shared builders for the task tests."""

from __future__ import annotations

import pytest

from cnnlab.models import model_spec

OPTIMIZER = {"_target_": "torch.optim.AdamW", "lr": 1e-3}


def model_config(name: str, small_input: bool = False) -> dict:
    config = {"_target_": "cnnlab.models.build_backbone", "name": name}
    if small_input:
        config["small_input"] = True
    return config


def task_arguments(
    name: str, num_classes: int = 4, image_size: int = 32, in_channels: int = 3, small_input: bool = False
) -> dict:
    """What cnnlab.training.build_task passes a task, for one registered model."""
    return dict(
        model=model_config(name, small_input),
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=max(image_size, model_spec(name).min_input_size),
        optimizer=OPTIMIZER,
        class_names=[f"class{i}" for i in range(num_classes)],
        mean=[0.5] * in_channels,
        std=[0.25] * in_channels,
    )


@pytest.fixture
def make_task_arguments():
    return task_arguments
