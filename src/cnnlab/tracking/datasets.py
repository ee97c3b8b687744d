"""The prepared dataset as an MLflow dataset input: what the runs table's Dataset column shows.

A prepared directory becomes an MLflow `MetaDataset` (metadata only: the arrays stay in DVC) named
<data name>-<image size> (digits-32) wherever it lies (the pipeline's is data/prepared/pipeline), with
the prepared data's content hash as its digest and its split sizes, classes and full hash as its
profile. Training logs it with context
"training"; evaluation logs the test split as its own dataset (<name>/test), context "evaluation".
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Optional

from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset

from cnnlab.paths import project_root

# MLflow stores a dataset digest in 36 characters (PostgreSQL enforces it): the hash's first 32 hex
# digits; the whole hash is in the profile and the run's cnnlab.data_hash tag
DIGEST_LENGTH = 32


class ProfiledDataset(MetaDataset):
    """A MetaDataset that also carries a profile (split sizes, classes, the full content hash)."""

    def __init__(self, source, name: str, digest: str, profile: dict):
        self._profile = profile
        super().__init__(source, name=name, digest=digest)

    @property
    def profile(self) -> Optional[Any]:
        return self._profile

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "profile": json.dumps(self._profile)}


def prepared_dataset(
    prepared_dir: Path, meta: dict, splits: tuple[str, ...] = ("train", "val", "test")
) -> ProfiledDataset:
    """The dataset input of the prepared data in `prepared_dir` (its meta.json as `meta`), limited to `splits`."""
    if str(prepared_dir).startswith("s3://"):  # data.storage=shards streamed from object storage
        location, prepared_dir = str(prepared_dir), Path(str(prepared_dir).rstrip("/"))
    else:
        prepared_dir = Path(prepared_dir).resolve()
        try:  # a path in the project, as DVC tracks it: the same on every team member's checkout
            location = str(prepared_dir.relative_to(project_root().resolve()))
        except ValueError:
            location = str(prepared_dir)
    # named by what it holds (data=<name> at <size> px), not by its folder: the pipeline's is data/prepared/pipeline
    base = f"{meta['name']}-{meta['image_size']}" if "name" in meta and "image_size" in meta else prepared_dir.name
    name = base if set(splits) == {"train", "val", "test"} else f"{base}/{'+'.join(splits)}"
    sizes = meta.get("split_sizes", {})
    profile = {
        "num_samples": sum(int(sizes.get(s, 0)) for s in splits),
        "split_sizes": {s: int(sizes.get(s, 0)) for s in splits},
        "num_classes": len(meta.get("classes") or []),
        "content_hash": meta["content_hash"],
    }
    if meta.get("storage") == "shards":  # which shards make up the data (each file's hash is in meta.json)
        profile["storage"] = "shards"
        profile["shards"] = {s: len(meta["shards"].get(s, [])) for s in splits}
    with warnings.catch_warnings():  # "can be interpreted in multiple ways": each is the local-file source
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(location)
    return ProfiledDataset(source, name, meta["content_hash"][:DIGEST_LENGTH], profile)
