"""cnnlab-explain: activations, filters and class-activation maps of a trained run, logged into it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from cnnlab.cli.app import run_app
from cnnlab.config import minimum, register_configs
from cnnlab.paths import config_dir

USAGE = """\
usage: cnnlab-explain run=DIR|RUN_ID|models:/NAME@ALIAS [images=test|PATH] [num_images=N] [cam.layer=STAGE]
                      [cam.class_index=K] [cam.smooth=false] [filters.layers=[stage2,stage3]] [pictures=[cam]]
                      [output_dir=DIR] [log=false]
       cnnlab-explain model=NAME model.weights=imagenet images=PATH [...]

Look inside a trained network, on a few test images (default) or image files:
  activations/  every channel of every backbone stage (stage1 ... stageN), per image;
  filters/      the first convolution's kernels, and for each chosen layer the inputs that maximise
                its first filters (gradient ascent from noise);
  cam/          Grad-CAM and Grad-CAM++ (HiResCAM on request; Captum) at a stage or convolution: for the
                predicted and the true class, the class head with its boxes (localisation), or every class
                (segmentation);
                each map the mean over the image, its mirror and two enlargements (cam.smooth=false: one pass).
Pictures are written to output_dir and logged into the run's MLflow run under explain/, only once all
of them are made. Files are converted and resized as training data was (said on stderr). A model URI
is followed to the run that logged it, whose checkpoint is explained. model=<zoo name>
model.weights=imagenet explains that network with torchvision's ImageNet weights as it is (no run):
image files only, read the ImageNet way, CAMs of the predicted class among the 1,000; files only.

examples:
  cnnlab-explain run=outputs/2026-12-01/10-00-00
  cnnlab-explain run=models:/cnnlab-classification-resnet18@champion cam.layer=stage3 num_images=16
  cnnlab-explain run=3f2a... images=photos/ pictures=[cam] cam.class_index=2
  cnnlab-explain model=mobilenet_v2 model.weights=imagenet images=photos/ pictures=[cam]
"""


@dataclass
class ActivationSettings:
    max_channels: int = minimum(64, 1)


@dataclass
class FilterSettings:
    layers: List[str] = field(default_factory=list)
    count: int = minimum(8, 1)
    steps: int = minimum(32, 1)


@dataclass
class CamSettings:
    layer: Optional[str] = None
    methods: List[str] = field(default_factory=lambda: ["gradcam", "gradcampp"])
    class_index: Optional[int] = minimum(None, 0)
    smooth: bool = True


@dataclass
class ExplainConfig:
    run: Optional[str] = None  # a training output directory, an MLflow run id, or a models:/ URI
    model: Any = None  # model=<zoo name> model.weights=imagenet: a pretrained network as it is, no run
    images: str = "test"  # test, or an image file or directory
    num_images: int = minimum(8, 1)
    indices: List[int] = field(default_factory=list)
    checkpoint: str = "best"
    pictures: List[str] = field(default_factory=lambda: ["activations", "filters", "cam"])
    output_dir: str = "explain"
    log: bool = True
    tracking_uri: Optional[str] = None
    seed: int = 0
    activations: ActivationSettings = field(default_factory=ActivationSettings)
    filters: FilterSettings = field(default_factory=FilterSettings)
    cam: CamSettings = field(default_factory=CamSettings)


register_configs()
ConfigStore.instance().store(name="explain_schema", node=ExplainConfig)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="explain")
def _explain(cfg: DictConfig) -> None:
    # the work is imported when the command runs: --help stays instant without torch, Captum and MLflow
    from cnnlab.cli.app import exit_on_user_error
    from cnnlab.config import ConfigError, check_bounds

    with exit_on_user_error():
        check_bounds(cfg, ExplainConfig)
        pretrained = cfg.model is not None and cfg.model.get("name")
        if cfg.run is None and not pretrained:
            raise ConfigError(
                "run required: cnnlab-explain run=<training output dir | MLflow run id | models:/<name>@<alias>> "
                "(or, for a pretrained network as it is, model=<zoo name> model.weights=imagenet images=<photos>)"
            )
        if cfg.run is not None and pretrained:
            raise ConfigError(f"run={cfg.run} and model={cfg.model.name}: give one of them")
        from cnnlab.explain.report import explain_run  # after the checks: a bad value is one line in a second

        result = explain_run(cfg)
    logged = f", logged into MLflow run {result.run_id} under explain/" if result.run_id else ""
    print(f"{len(result.files)} pictures of {result.images} images -> {result.output_dir}{logged}")


def main() -> None:
    run_app(_explain, USAGE)


if __name__ == "__main__":
    main()
