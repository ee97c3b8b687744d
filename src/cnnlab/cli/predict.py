"""cnnlab-predict: labels and scores, boxes or masks for new images from a registered or logged model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from cnnlab.cli.app import run_app
from cnnlab.config import minimum, register_configs
from cnnlab.paths import config_dir

USAGE = """\
usage: cnnlab-predict model_uri=URI input=PATH [output_dir=DIR] [batch_size=N] [top_k=K] [tracking_uri=URI]
       cnnlab-predict model=NAME model.weights=imagenet input=PATH [top_k=5] ...

Run a cnnlab model on image files (png, jpg, ...: one file, or every image under a directory).
Images are converted to the model's channels, resized to its input size and normalised with the
statistics stored with the model. Writes output_dir/predictions.csv (file, label, score, top_k;
x_min, y_min, x_max, y_max in the input image's pixels for localisation) and, for segmentation,
output_dir/masks/<file stem>.png (class ids at the input's size). An unreadable image is listed in
the CSV with its error (and a warning); the command fails only when no image can be read.
A model trained on audio (data=sounds, data=audio_folder) reads audio files instead (wav, flac,
ogg, ...), each turned into the same log-mel spectrogram as its training clips.
Instead of a trained model, model=<zoo name> model.weights=imagenet runs that network with
torchvision's published ImageNet weights as it is (`make weights` puts MobileNetV2's in the cache
offline): the 1,000 ImageNet classes by name, inputs centre-cropped and normalised the ImageNet way.
Each image's top_k classes are printed (the first 20 images) and written to the CSV.

examples:
  cnnlab-predict model_uri=models:/cnnlab-classification-lenet5@champion input=scans/
  cnnlab-predict model_uri=models:/cnnlab-segmentation-vgg11/3 input=photo.jpg output_dir=out
  cnnlab-predict model_uri=models:/cnnlab-classification-simple_cnn@champion input=recordings/
  cnnlab-predict model=mobilenet_v2 model.weights=imagenet input=photos/ top_k=5
"""


SHOWN = 20  # images whose top_k classes are printed; all of them are in the CSV


@dataclass
class PredictConfig:
    model_uri: Optional[str] = None  # models:/<name>@<alias>, models:/<name>/<version>, models:/<id>, a model dir
    input: str = MISSING  # an image file or a directory of images
    model: Any = None  # model=<zoo name> model.weights=imagenet: a pretrained network used as it is
    output_dir: str = "predictions"
    tracking_uri: Optional[str] = None  # None: $MLFLOW_TRACKING_URI, else the project's SQLite file
    batch_size: int = minimum(64, 1)
    top_k: int = minimum(3, 1)


register_configs()
ConfigStore.instance().store(name="predict_schema", node=PredictConfig)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="predict")
def _predict(cfg: DictConfig) -> None:
    # the work is imported when the command runs: --help stays instant without torch and MLflow
    from cnnlab.cli.app import exit_on_user_error
    from cnnlab.config import ConfigError, check_bounds

    with exit_on_user_error():
        check_bounds(cfg, PredictConfig)
        pretrained = cfg.model if cfg.model is not None and cfg.model.get("name") else None
        missing = [key for key in ("input",) if OmegaConf.is_missing(cfg, key)]
        if cfg.model_uri is None and pretrained is None:
            missing.insert(0, "model_uri")
        if missing:
            raise ConfigError(
                f"{' and '.join(missing)} required: cnnlab-predict model_uri=models:/<name>@<alias> input=<image "
                "or dir> (or, for a pretrained network as it is, model=<zoo name> model.weights=imagenet)"
            )
        if cfg.model_uri is not None and pretrained is not None:
            raise ConfigError(f"model_uri={cfg.model_uri} and model={pretrained.name}: give one of them")
        from cnnlab.prediction import predict  # after the checks: a bad value is one line in a second

        result = predict(
            cfg.model_uri, cfg.input, cfg.output_dir, cfg.tracking_uri, cfg.batch_size, cfg.top_k, pretrained
        )
    failed = len(result.failed)
    for row in [row for row in result.rows if not row.get("error")][:SHOWN]:
        print(f"{row['file']}: {row['top_k'].replace(';', '  ')}" if "top_k" in row else row["file"])
    note = f"; {failed} unreadable, listed with their error" if failed else ""
    print(f"{len(result.rows) - failed} images predicted -> {result.csv_path}{note}")


def main() -> None:
    run_app(_predict, USAGE)


if __name__ == "__main__":
    main()
