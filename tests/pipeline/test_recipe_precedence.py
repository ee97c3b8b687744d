"""params.yaml's knobs against the experiment recipe it names: disagreement is an error, never a silent overrule."""

from __future__ import annotations

import pytest

from cnnlab.config import ConfigError, check_pipeline_against_recipe, recipe_settings
from tests.conftest import REPO


def test_recipe_settings_are_its_group_choices_and_values():
    recipe = {
        "defaults": [{"override /model": "resnet18"}, {"override /data": "shapes"}],
        "model": {"width_mult": 0.25},
        "trainer": {"max_epochs": 50},
    }
    assert recipe_settings(recipe) == {
        "model": "resnet18",
        "data": "shapes",
        "model.width_mult": 0.25,
        "trainer.max_epochs": 50,
    }


def test_knobs_that_contradict_the_recipe_are_named():
    knobs = [
        "experiment=shapes_classification",
        "data=digits",
        "model=lenet5",
        "task=classification",
        "trainer.max_epochs=40",
    ]
    with pytest.raises(ConfigError) as err:
        check_pipeline_against_recipe("shapes_classification", knobs, [], REPO / "conf")
    message = str(err.value)
    assert "data=digits (the recipe: shapes)" in message and "model=lenet5 (the recipe: resnet18)" in message
    assert "trainer.max_epochs=40 (the recipe: 50)" in message and "task=" not in message  # agreeing knobs pass


def test_agreeing_knobs_and_free_overrides_pass():
    knobs = [
        "data=shapes",
        "model=resnet18",
        "augment=shapes",
        "optimizer.lr=0.003",
        "trainer.max_epochs=5",
        "trainer.max_epochs=5",
    ]
    check_pipeline_against_recipe("shapes_classification", knobs, ["trainer.max_epochs=5"], REPO / "conf")
    check_pipeline_against_recipe("none", ["model=lenet5"], [], REPO / "conf")
    check_pipeline_against_recipe(None, ["model=lenet5"], [], REPO / "conf")
