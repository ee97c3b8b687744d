"""One source of defaults: the pipeline trains params.yaml's recipe as `cnnlab-train experiment=<it>` composes it,
and `cnnlab-train` with no arguments composes that same recipe."""

from __future__ import annotations

import re
import shlex
import subprocess

import yaml
from omegaconf import OmegaConf

from cnnlab.data.prepare import prepare_settings
from tests.conftest import BIN, REPO, cli_env

PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
# where the pipeline keeps its files, and how it shows progress: not what it trains
WHERE_AND_DISPLAY = {("data", "prepared_dir"), ("trainer", "enable_progress_bar")}


def stage_arguments(stage: str) -> list[str]:
    """The Hydra overrides a stage of dvc.yaml passes, with params.yaml substituted as DVC does."""
    command = re.sub(r"\$\{(\w+)\}", lambda m: str(PARAMS[m.group(1)]), STAGES[stage]["cmd"])
    # configure: `mkdir ... && cnnlab-train --cfg job ... > tmp && mv tmp file`: the cnnlab-train part
    (part,) = [p for p in command.split(" && ") if p.lstrip().startswith("cnnlab-")]
    words = shlex.split(part.split(" > ")[0])
    if words[1:3] == ["--cfg", "job"]:  # configure prints the config the other stages run
        words = [words[0], *words[3:]]
    return [word for word in words[1:] if not word.startswith("hydra.")]


def composed(*overrides: str) -> dict:
    """What `cnnlab-train <overrides> --cfg job` prints."""
    done = subprocess.run(
        [str(BIN / "cnnlab-train"), *overrides, "--cfg", "job"],
        cwd=REPO,
        env=cli_env(REPO),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return yaml.safe_load(done.stdout)


def training_part(config: dict) -> dict:
    for group, key in WHERE_AND_DISPLAY:
        config[group].pop(key)
    return config


def test_params_name_a_recipe_and_free_overrides_and_nothing_else():
    assert set(PARAMS) == {"experiment", "overrides"}
    assert (REPO / "conf" / "experiment" / f"{PARAMS['experiment']}.yaml").is_file()
    assert "null" not in (REPO / "params.yaml").read_text().replace("# ", "")  # no null spelled as a string


def test_the_train_stage_trains_what_cnnlab_train_composes_for_the_recipe():
    stage = composed(*stage_arguments("train"))
    assert training_part(stage) == training_part(composed(f"experiment={PARAMS['experiment']}"))
    # the config the configure stage writes, and prepare reads, is the one train runs
    assert stage_arguments("configure") == stage_arguments("train")
    assert STAGES["prepare"]["cmd"].split()[1:] == ["--config-dir", "artifacts/configure", "--config-name", "train"]
    assert STAGES["configure"]["outs"] == [{"artifacts/configure/train.yaml": {"cache": False}}]


def test_cnnlab_train_without_arguments_composes_the_pipelines_recipe():
    assert composed() == composed(f"experiment={PARAMS['experiment']}")
    plain = composed("experiment=none")
    assert plain != composed()  # the recipe is not the plain defaults, which experiment=none still gives
    assert (plain["trainer"]["max_epochs"], plain["optimizer"]["lr"], plain["data"]["batch_size"]) == (20, 0.003, 32)


def test_other_recipes_still_compose_on_the_plain_defaults():
    recipe = composed("experiment=shapes_classification")
    assert recipe["task"]["module"]["label_smoothing"] == 0.0 and recipe["optimizer"]["weight_decay"] == 0.0005
    assert (recipe["model"]["name"], recipe["data"]["name"], recipe["trainer"]["max_epochs"]) == (
        "resnet18",
        "shapes",
        50,
    )


def test_prepare_reruns_on_exactly_the_data_keys_that_decide_the_prepared_data():
    (watched,) = [entry for entry in STAGES["prepare"]["params"] if "artifacts/configure/train.yaml" in entry]
    keys = watched["artifacts/configure/train.yaml"]
    config = OmegaConf.create(composed())
    config.data.prepared_dir = "data/prepared/pipeline"  # the only path prepare_settings would resolve
    assert keys == [f"data.{key}" for key in prepare_settings(config.data)]
