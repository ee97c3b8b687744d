"""Published ImageNet weights by name: torchvision's file names, the hub cache, sha256 checks, download, offline."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import pytest
import torch

from cnnlab.config import ConfigError
from cnnlab.data.prepared import file_hash
from cnnlab.models import available_models, build_backbone, hub
from cnnlab.models.weights import read_weights
from tests.imagenet import MOBILENET, REAL_FILE, needs_weights


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty hub cache of the test's own ($TORCH_HOME), and no download address that answers."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("CNNLAB_WEIGHTS_URL", "http://127.0.0.1:9/")  # the discard port: refused at once
    return hub.cache_dir()


@pytest.fixture
def server(tmp_path):
    """A file server on 127.0.0.1 standing in for torchvision's address: (base URL, folder it serves)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", folder
    httpd.shutdown()
    httpd.server_close()


def test_names_resolve_to_torchvision_file_names():
    assert hub.published_file("mobilenet_v2", "imagenet") == MOBILENET  # imagenet = IMAGENET1K_V1
    assert hub.published_file("mobilenet_v2", "IMAGENET1K_V1") == MOBILENET
    assert hub.published_file("mobilenet_v2", "IMAGENET1K_V2") == "mobilenet_v2-7ebf99e0.pth"
    assert hub.published_file("resnet50", "imagenet") == "resnet50-0676ba61.pth"
    assert hub.is_weight_name("imagenet") and hub.is_weight_name("IMAGENET1K_V2")
    assert not hub.is_weight_name("resnet18.pth") and not hub.is_weight_name("runs:/abc/model")


def test_every_published_model_is_in_the_zoo_and_every_file_carries_its_hash():
    assert set(hub.PUBLISHED) <= set(available_models())
    for files in hub.PUBLISHED.values():
        for file_name in files.values():
            assert len(hub.hash_prefix(file_name)) >= 8


def test_a_name_a_model_has_no_file_for_lists_what_it_has():
    with pytest.raises(ConfigError) as err:
        hub.published_file("resnet18", "IMAGENET1K_V2")
    assert (
        "model=resnet18 has no published IMAGENET1K_V2 weights; it has: IMAGENET1K_V1 (resnet18-f37072fd.pth)"
        in str(err.value)
    )
    with pytest.raises(
        ConfigError, match=r"model=zfnet has no published IMAGENET1K_V1 weights; it has: none\. .*mobilenet_v2"
    ):
        hub.published_file("zfnet", "imagenet")


def test_the_cache_is_torch_hubs_under_torch_home(cache, tmp_path):
    assert cache == tmp_path / "torch" / "hub" / "checkpoints"


def test_offline_the_error_names_the_file_and_where_it_goes(cache):
    with pytest.raises(ConfigError) as err:
        hub.resolve("mobilenet_v2", "imagenet")
    message = str(err.value)
    assert f"{MOBILENET} (model=mobilenet_v2) is not in the weights cache {cache}" in message
    assert "http://127.0.0.1:9/" + MOBILENET in message and "make weights" in message
    assert not cache.exists() or not any(cache.iterdir())  # nothing half-written


def test_a_cached_file_whose_sha256_does_not_match_its_name_is_refused(cache):
    cache.mkdir(parents=True)
    (cache / MOBILENET).write_bytes(b"not the weights")
    with pytest.raises(
        ConfigError, match=r"mobilenet_v2-b0353104.pth: sha256 [0-9a-f]+\.\.\. does not match the b0353104"
    ):
        hub.resolve("mobilenet_v2", "imagenet")
    with pytest.raises(ConfigError, match="does not match the b0353104"):
        read_weights("imagenet", model_name="mobilenet_v2")


def test_a_download_with_the_wrong_bytes_leaves_nothing_in_the_cache(cache, server, monkeypatch):
    url, folder = server
    monkeypatch.setenv("CNNLAB_WEIGHTS_URL", url)
    (folder / MOBILENET).write_bytes(b"a page that is not the file")
    with pytest.raises(ConfigError, match="does not match the b0353104"):
        hub.resolve("mobilenet_v2", "imagenet")
    assert sorted(p.name for p in cache.iterdir()) == []


@needs_weights
def test_download_from_the_address_then_the_cache(cache, server, monkeypatch):
    url, folder = server
    monkeypatch.setenv("CNNLAB_WEIGHTS_URL", url)
    shutil.copy(REAL_FILE, folder / MOBILENET)
    assert hub.resolve("mobilenet_v2", "imagenet") == cache / MOBILENET
    assert file_hash(cache / MOBILENET) == file_hash(REAL_FILE)
    (folder / MOBILENET).unlink()  # the second time it comes from the cache
    assert hub.resolve("mobilenet_v2", "IMAGENET1K_V1") == cache / MOBILENET


@needs_weights
def test_install_checks_name_and_hash(cache, tmp_path):
    wrong_name = tmp_path / "mobilenet.pth"
    shutil.copy(REAL_FILE, wrong_name)
    with pytest.raises(ConfigError, match="mobilenet.pth: not a published file of the zoo"):
        hub.install(wrong_name)
    forged = tmp_path / "resnet18-f37072fd.pth"
    shutil.copy(REAL_FILE, forged)
    with pytest.raises(ConfigError, match="does not match the f37072fd"):
        hub.install(forged)
    assert hub.main(["install", str(REAL_FILE)]) == 0 and (cache / MOBILENET).is_file()


@needs_weights
def test_the_real_file_loads_strictly_into_the_zoo_mobilenet(cache):
    hub.install(REAL_FILE)
    weights = read_weights("imagenet", model_name="mobilenet_v2")
    assert weights.kind == "torchvision" and weights.sha256.startswith("b0353104")
    assert weights.mean == [0.485, 0.456, 0.406]  # ImageNet's normalisation travels with the weights
    with torch.device("meta"):
        model = build_backbone("mobilenet_v2", num_classes=1000, in_channels=3, image_size=224)
    assert set(model.state_dict()) == set(weights.state_dict)
