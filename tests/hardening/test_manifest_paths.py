"""A manifest cannot read files outside data.root, and no error quotes a file's bytes."""

from __future__ import annotations

import numpy as np
from PIL import Image

from cnnlab.data.sources.manifest import ManifestSource
from tests.hardening.preparing import prepare_skipping


def test_paths_outside_the_root_are_bad_samples_and_never_read(tmp_path):
    root, outside = tmp_path / "data", tmp_path / "elsewhere"
    (root / "images").mkdir(parents=True)
    outside.mkdir()
    for i in range(4):
        Image.fromarray(np.full((12, 12, 3), 40 * i, np.uint8)).save(root / "images" / f"{i}.png")
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(outside / "secret.png")
    (outside / "secret.txt").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "images" / "link.png").symlink_to(outside / "secret.png")
    rows = [
        "path,label",
        "images/0.png,a",
        "images/1.png,b",
        "images/2.png,a",
        "images/3.png,b",
        "../../../../../../etc/passwd,a",
        f"{outside / 'secret.png'},b",
        "images/link.png,a",
        "../elsewhere/secret.txt,b",
    ]
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    meta, _, skipped = prepare_skipping(ManifestSource(str(root)), tmp_path)
    assert meta["num_samples"] == 4 and len(meta["skipped"]) == 4
    assert skipped.count("resolves outside data.root") == 4
    assert "root:x" not in skipped and "b'" not in skipped


def test_a_non_image_is_named_without_its_content(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "notes.png").write_text("password=hunter2\n")
    (root / "manifest.csv").write_text("notes.png,a\n")
    source = ManifestSource(str(root))
    try:
        source.load(source.items()[0])
    except Exception as err:
        assert "notes.png: not an image file" in str(err) and "hunter2" not in str(err)
    else:
        raise AssertionError("a text file was read as an image")
