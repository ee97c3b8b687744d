"""A zoo network with published ImageNet weights, used as it is: no training run, the 1,000 ImageNet classes.

`model=<name> model.weights=imagenet` (or IMAGENET1K_V1, ...) on cnnlab-predict and cnnlab-explain: the
architecture at 224 px and 3 channels, torchvision's file loaded strictly (every tensor, the ImageNet
classifier included), ImageNet's mean and std, and the class names in the output order.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from cnnlab.config import ConfigError
from cnnlab.models import hub
from cnnlab.models.weights import read_weights
from cnnlab.tasks.classification import ClassificationTask

IMAGENET_SIZE = 224


def is_pretrained_request(model_cfg) -> bool:
    """Whether a command was given model=<name> (a zoo network) rather than a trained run or model."""
    return model_cfg is not None and bool(model_cfg.get("name"))


def imagenet_task(model_cfg: DictConfig) -> ClassificationTask:
    """The classification task around `model_cfg`'s network with its published ImageNet weights, in eval mode."""
    name, weights_name = model_cfg.get("name"), model_cfg.get("weights")
    if not weights_name or not hub.is_weight_name(str(weights_name)):
        raise ConfigError(
            f"model={name} without a trained run needs published weights: add model.weights=imagenet "
            "(or IMAGENET1K_V1, ...), or name a trained model or run instead"
        )
    weights = read_weights(str(weights_name), model_name=name)
    spec = OmegaConf.to_container(model_cfg, resolve=True) if isinstance(model_cfg, DictConfig) else dict(model_cfg)
    spec = {key: value for key, value in spec.items() if key != "weights"}
    spec.setdefault("_target_", "cnnlab.models.build_backbone")
    task = ClassificationTask(
        model=spec,
        num_classes=1000,
        in_channels=3,
        image_size=IMAGENET_SIZE,
        optimizer={},  # never trained here
        class_names=hub.imagenet_classes(),
        mean=weights.mean,
        std=weights.std,
    )
    task.backbone.load_state_dict(weights.state_dict, strict=True)
    return task.eval()


def describe(model_cfg) -> str:
    return f"model={model_cfg.get('name')} model.weights={model_cfg.get('weights')}"
