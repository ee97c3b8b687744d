"""prepare as a whole: atomic replacement, the process pool, data.root checks, the tasks data serves, the CLI."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from data_writers import image_array, read_skipped, write_image

from cnnlab.config import ConfigError
from cnnlab.data import prepared as prepared_module
from cnnlab.data.prepare import ensure_prepared, prepare_from_config
from cnnlab.data.sources.base import BadSampleError
from cnnlab.data.sources.image_folder import ImageFolderSource

ROOT = Path(__file__).resolve().parents[2]
DATA_CONFIGS = sorted(p.stem for p in (ROOT / "conf" / "data").glob("*.yaml"))


def folder_dataset(root: Path, per_class: int = 4) -> Path:
    for label, name in enumerate(("cat", "dog", "fox")):
        for i in range(per_class):
            write_image(root / name / f"{name}.{i}.jpg", image_array(30 + i, 26, seed=label * 100 + i), quality=90)
    return root


def tree_digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_failed_prepare_leaves_the_previous_dataset_byte_identical(tmp_path, prepare):
    root = folder_dataset(tmp_path / "raw")
    _, meta = prepare(ImageFolderSource(str(root)))
    before = tree_digest(tmp_path / "prepared")
    (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(BadSampleError, match=r"broken\.jpg"):
        prepare(ImageFolderSource(str(root)), image_size=24)
    assert tree_digest(tmp_path / "prepared") == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left behind


def test_prepare_failing_while_writing_leaves_the_previous_dataset(tmp_path, prepare, monkeypatch):
    root = folder_dataset(tmp_path / "raw")
    prepare(ImageFolderSource(str(root)))
    before = tree_digest(tmp_path / "prepared")
    real_save = np.save

    def save_then_fail(path, array, *args, **kwargs):
        real_save(path, array, *args, **kwargs)
        if str(path).endswith("labels.npy"):
            raise OSError("disk full")

    monkeypatch.setattr(prepared_module.np, "save", save_then_fail)
    with pytest.raises(OSError, match="disk full"):
        prepare(ImageFolderSource(str(root)), image_size=24)
    assert tree_digest(tmp_path / "prepared") == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_process_pool_gives_the_serial_result_and_keeps_the_skip_policy(tmp_path, prepare):
    root = folder_dataset(tmp_path / "raw", per_class=10)
    (root / "fox" / "fox.3.jpg").write_bytes(b"garbage")
    (root / "cat" / "readme.txt").write_text("not a picture")
    _, serial = prepare(ImageFolderSource(str(root)), directory=tmp_path / "serial", on_bad_sample="skip", workers=1)
    _, pooled = prepare(ImageFolderSource(str(root)), directory=tmp_path / "pooled", on_bad_sample="skip", workers=2)
    assert pooled["content_hash"] == serial["content_hash"]  # same samples, same order, same pixels
    assert pooled["skipped"] == serial["skipped"] == [str(root / "cat" / "readme.txt"), str(root / "fox" / "fox.3.jpg")]
    assert read_skipped(tmp_path / "pooled") == read_skipped(tmp_path / "serial")
    with pytest.raises(BadSampleError, match=r"cat/readme\.txt: not an image file"):  # the first bad one, in item order
        prepare(ImageFolderSource(str(root)), directory=tmp_path / "pooled-error", workers=2)


@pytest.mark.parametrize("name", DATA_CONFIGS)
def test_every_data_config_composes_with_a_sized_prepared_dir(compose_config, name, tmp_path):
    cfg = compose_config(f"data={name}", f"paths.data_dir={tmp_path}")
    assert "tasks" not in cfg.data  # derived from the labels the reader carries, never listed by hand
    prepared_dir = Path(cfg.data.prepared_dir)
    assert prepared_dir.parent == tmp_path / "prepared"
    assert name in prepared_dir.name and str(cfg.data.image_size) in prepared_dir.name
    if "root" in cfg.data.source:  # a dataset on disk: data.root is required (fashion_mnist's has a default)
        if cfg.data.root is None:
            with pytest.raises(ConfigError, match=f"data.root is not set: data={name}"):
                prepare_from_config(cfg.data)
        cfg.data.root = str(tmp_path / "missing")
        with pytest.raises(ConfigError, match=r"data.root=.*missing does not exist"):
            prepare_from_config(cfg.data)


def test_tasks_the_source_cannot_serve_are_refused(compose_config, tmp_path):
    """The tasks a dataset serves follow from the labels its reader carries (each task declares its own)."""
    from cnnlab.data.prepare import build_source, declared_label_kinds
    from cnnlab.tasks import check_data_labels, served_tasks, task_class, task_class_for

    root = tmp_path / "voc"
    (root / "JPEGImages").mkdir(parents=True)
    cfg = compose_config("data=voc", f"data.root={root}", "data.source.subset=detection", f"paths.data_dir={tmp_path}")
    source = build_source(cfg.data)
    carried = declared_label_kinds(cfg.data)
    assert carried == source.label_kinds() == ["label", "box"]
    assert served_tasks(carried) == ["classification", "localization"]
    with pytest.raises(
        ConfigError,
        match=r"task=segmentation needs masks, but .* has none .*it serves: classification, localization\)",
    ):
        check_data_labels(task_class("segmentation"), carried, source.describe(), cfg.data.name)
    check_data_labels(task_class("localization"), carried, source.describe(), cfg.data.name)
    cfg = compose_config("task=segmentation", "data=voc", f"data.root={root}", "data.source.subset=detection")
    with pytest.raises(ConfigError, match=r"task=segmentation needs labels that data=voc does not have \(it serves: "):
        task_class_for(cfg, carried)  # before anything is read
    cfg = compose_config("data=voc", f"data.root={root}", "data.source.subset=boxes", f"paths.data_dir={tmp_path}")
    with pytest.raises(ConfigError, match="data.source.subset='boxes' is not valid"):
        prepare_from_config(cfg.data)


def test_prepare_from_config_and_ensure_prepared(compose_config, tmp_path):
    root = folder_dataset(tmp_path / "raw")
    cfg = compose_config("data=image_folder", f"data.root={root}", "data.image_size=20", f"paths.data_dir={tmp_path}")
    meta = prepare_from_config(cfg.data)
    assert meta["num_samples"] == 12 and not meta["has_boxes"] and not meta["has_masks"]
    assert Path(cfg.data.prepared_dir) == tmp_path / "prepared" / "image_folder-20"
    mtime = (Path(cfg.data.prepared_dir) / "meta.json").stat().st_mtime_ns
    assert ensure_prepared(cfg.data) == meta  # same settings: not prepared again
    assert (Path(cfg.data.prepared_dir) / "meta.json").stat().st_mtime_ns == mtime
    other = folder_dataset(tmp_path / "other", per_class=2)
    cfg.data.root = str(other)
    assert ensure_prepared(cfg.data)["num_samples"] == 6  # another root: prepared again


def test_cnnlab_prepare_command(tmp_path):
    root = folder_dataset(tmp_path / "raw")
    command = [
        str(Path(sys.executable).with_name("cnnlab-prepare")),
        "data=image_folder",
        f"paths.data_dir={tmp_path}",
        f"hydra.run.dir={tmp_path}/hydra",
    ]
    env = {**os.environ, "CNNLAB_ROOT": str(ROOT)}
    missing = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert missing.returncode == 2 and "error: data.root is not set: data=image_folder" in missing.stderr
    done = subprocess.run([*command, f"data.root={root}"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "prepared image_folder: 12 samples" in done.stdout and "0 skipped" in done.stdout
