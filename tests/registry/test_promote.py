"""promote_if_better: the alias moves only to a version that beats its holder on the recorded metric."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from cnnlab.tracking.model_registry import promote_if_better


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlflow.db'}"  # one store: creating one takes seconds


@pytest.fixture
def registry(store, request, tmp_path):
    """(uri, client, name): a registered model of the test's own with four versions (sources need not exist)."""
    name = f"cnnlab-promote-{request.node.name.replace('_', '-')}"
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    client.create_registered_model(name)
    for number in range(4):
        client.create_model_version(name, source=str(tmp_path / f"model-{number}"))
    return store, client, name


def holder(client: MlflowClient, name: str, alias: str = "champion") -> str:
    return str(client.get_model_version_by_alias(name, alias).version)


def test_first_version_takes_a_free_alias(registry):
    uri, client, name = registry
    assert promote_if_better(uri, name, 1, "test/acc", 0.80, "max") is True
    assert holder(client, name) == "1"
    assert float(client.get_model_version(name, "1").tags["test/acc"]) == pytest.approx(0.80)


def test_worse_version_does_not_take_it_better_one_does(registry):
    uri, client, name = registry
    promote_if_better(uri, name, 1, "test/acc", 0.80, "max")
    assert promote_if_better(uri, name, 2, "test/acc", 0.70, "max") is False
    assert holder(client, name) == "1"
    assert float(client.get_model_version(name, "2").tags["test/acc"]) == pytest.approx(0.70)  # recorded all the same
    assert promote_if_better(uri, name, 3, "test/acc", 0.80, "max") is False  # a tie keeps the incumbent
    assert promote_if_better(uri, name, 4, "test/acc", 0.90, "max") is True
    assert holder(client, name) == "4"
    assert promote_if_better(uri, name, 4, "test/acc", 0.90, "max") is True  # the holder asking again


def test_min_mode_prefers_lower_values(registry):
    uri, client, name = registry
    assert promote_if_better(uri, name, 1, "test/loss", 0.5, "min", alias="lowest-loss")
    assert not promote_if_better(uri, name, 2, "test/loss", 0.6, "min", alias="lowest-loss")
    assert promote_if_better(uri, name, 3, "test/loss", 0.4, "min", alias="lowest-loss")
    assert holder(client, name, "lowest-loss") == "3"


def test_hand_set_alias_without_a_recorded_metric_is_kept(registry):
    uri, client, name = registry
    client.set_registered_model_alias(name, "champion", "2")
    assert promote_if_better(uri, name, 3, "test/acc", 0.99, "max") is False
    assert holder(client, name) == "2"


def test_nan_never_takes_the_alias(registry):
    uri, client, name = registry
    assert promote_if_better(uri, name, 1, "test/acc", float("nan"), "max") is False
    assert client.get_registered_model(name).aliases == {}
