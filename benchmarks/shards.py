"""data.storage=shards against the array format and a bare decoder loop (issue 29).

    .venv/bin/python benchmarks/shards.py input   [--images 10000] [--rounds 3] [--webdataset]
    .venv/bin/python benchmarks/shards.py memory  [--counts 10000,100000]

input: a 10,000-image JPEG ImageFolder of photo-like images at 500 x 375 (random crops, flips and exposure of
scikit-image's real colour photos, 10 classes = 10 photos, JPEG quality --quality), prepared both ways at 224 px:
  - bytes on disk: the JPEG folder, the shard set (original bytes), the arrays (images.npy at 224 px);
  - training input at 224 px, per core (one process, one thread, batches of 64): decode (OpenCV's
    libjpeg-turbo) + random resized crop of the original + flip + normalise, for
      bare      a loop over the JPEG bytes held in memory: cv2.imdecode -> A.RandomResizedCrop -> stack ->
                flip -> normalise (the floor: no storage format at all)
      shards    cnnlab's ShardLoader over the local shard set (LitData reads, RecordDecoder, ShardBatches)
      s3        the same loader streaming the shard set from an S3 server on 127.0.0.1 (moto)
      arrays    today's prepared format at 224 px: flip + normalise only (it cannot crop the original)
      webdataset  (--webdataset) WebDataset tar shards of the same JPEG bytes, the same decode and crop
    interleaved over --rounds rounds; the best round of each is reported (images per CPU second and per second).
memory: N small JPEGs (160 x 120), prepared to shards in a child process, then one epoch streamed by a loader with
  one worker process: the peak memory (PSS) of each process tree and of its largest child (a decode worker, the
  training loader's worker), for each N.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

torch.set_num_threads(1)
if os.environ.get("CNNLAB_BENCH_TRACE"):  # a stuck run dumps its threads
    import faulthandler

    faulthandler.dump_traceback_later(float(os.environ["CNNLAB_BENCH_TRACE"]), exit=True)
cv2.setNumThreads(1)

BATCH = 64
FLIP = [{"_target_": "cnnlab.data.augment.BatchHorizontalFlip", "p": 0.5}]
CROP = (0.08, 1.0)


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


# ---- data -------------------------------------------------------------------------------------------------------
def photos() -> list[np.ndarray]:
    """Ten real colour photos that scikit-image's wheel ships (RGB uint8)."""
    import skimage.data

    folder = Path(skimage.data.__file__).parent
    names = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png", "motorcycle_right.png",
             "hubble_deep_field.jpg", "retina.jpg", "ihc.png", "color.png"]  # fmt: skip
    return [cv2.cvtColor(cv2.imread(str(folder / name), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for name in names]


def write_photo_folder(root: Path, count: int, size: tuple[int, int] = (500, 375), quality: int = 90) -> int:
    """`count` JPEGs at `size` (w, h): a random crop (a quarter to all of the photo), flip and exposure of one of the
    10 photos, the class its photo. Returns the bytes written."""
    rng = np.random.default_rng(0)
    sources = photos()
    total = 0
    for i in range(count):
        label = i % len(sources)
        photo = sources[label]
        height, width = photo.shape[:2]
        scale = rng.uniform(0.5, 1.0)
        crop_h, crop_w = int(height * scale), int(min(width, height * scale * size[0] / size[1]))
        top, left = rng.integers(0, height - crop_h + 1), rng.integers(0, width - crop_w + 1)
        image = cv2.resize(photo[top : top + crop_h, left : left + crop_w], size, interpolation=cv2.INTER_AREA)
        if rng.random() < 0.5:
            image = image[:, ::-1]
        image = np.clip(image.astype(np.float32) * rng.uniform(0.7, 1.3), 0, 255).astype(np.uint8)
        path = root / f"class{label}" / f"{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        ok, buffer = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        path.write_bytes(buffer.tobytes())
        total += len(buffer)
    return total


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def prepare(folder: Path, out: Path, storage: str, image_size: int = 224) -> tuple[dict, float]:
    from cnnlab.data.prepare import build_prepared_dataset, build_shard_dataset
    from cnnlab.data.sources.image_folder import ImageFolderSource

    options = dict(image_size=image_size, channels=3, val_fraction=0.0, test_fraction=0.0, seed=0)
    started = time.perf_counter()
    if storage == "shards":
        meta = build_shard_dataset(
            ImageFolderSource(str(folder)),
            out,
            meta={"name": "photos"},
            on_bad_sample="error",
            samples_per_shard=1000,
            max_side=None,
            **options,
        )
    else:
        meta = build_prepared_dataset(ImageFolderSource(str(folder)), out, name="photos", **options)
    return meta, time.perf_counter() - started


# ---- loaders ----------------------------------------------------------------------------------------------------
def measure(batches) -> dict:
    count, wall, cpu = 0, time.perf_counter(), time.process_time()
    for batch in batches:
        count += len(batch["label"])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"images": count, "images_per_s": round(count / wall), "images_per_cpu_s": round(count / cpu)}


def bare_batches(encoded: list[bytes], labels: list[int], mean, std):
    """The floor: decode, crop, flip, normalise, with nothing between the bytes and the loop."""
    import albumentations as A

    from cnnlab.data.augment import BatchHorizontalFlip
    from cnnlab.data.preprocess import BatchNormalizer

    crop = A.RandomResizedCrop(size=(224, 224), scale=CROP, ratio=(3 / 4, 4 / 3), p=1.0)
    crop.set_random_seed(0)
    flip, normalize = BatchHorizontalFlip(p=0.5), BatchNormalizer(mean, std)
    flip.set_random_seed(0)
    for start in range(0, len(encoded), BATCH):
        images = []
        for data in encoded[start : start + BATCH]:
            image = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            images.append(crop(image=image)["image"])
        images, _, _ = flip(np.stack(images))
        yield {"image": normalize(images), "label": torch.as_tensor(labels[start : start + BATCH])}


def shard_batches(location: str, mean, std, cache_dir: str):
    from cnnlab.data.augment import build_augmentation
    from cnnlab.data.preprocess import BatchNormalizer
    from cnnlab.data.shards import RecordDecoder, ShardBatches, shard_loader, shard_split

    dataset = shard_split(
        location,
        "train",
        RecordDecoder(224, 3, list(CROP), "error"),
        shuffle=True,
        seed=0,
        cache={"dir": cache_dir, "limit": "20GB"},
    )
    collate = ShardBatches(build_augmentation(FLIP, with_boxes=False), BatchNormalizer(mean, std), False, False)
    return shard_loader(dataset, batch_size=BATCH, num_workers=0, collate_fn=collate, train=True)


def array_batches(prepared: Path):
    from cnnlab.data.datamodule import CNNDataModule

    module = CNNDataModule(str(prepared), train_transforms=FLIP, batch_size=BATCH, num_workers=0)
    return module.train_dataloader()


def webdataset_batches(tar_pattern: str, mean, std):
    import albumentations as A
    import webdataset as wds

    from cnnlab.data.augment import BatchHorizontalFlip
    from cnnlab.data.preprocess import BatchNormalizer

    crop = A.RandomResizedCrop(size=(224, 224), scale=CROP, ratio=(3 / 4, 4 / 3), p=1.0)
    flip, normalize = BatchHorizontalFlip(p=0.5), BatchNormalizer(mean, std)

    def decode(sample):
        image = cv2.cvtColor(cv2.imdecode(np.frombuffer(sample["jpg"], np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        return crop(image=image)["image"], int(sample["cls"])

    dataset = wds.WebDataset(tar_pattern, shardshuffle=False).map(decode)
    images, labels = [], []
    for image, label in dataset:
        images.append(image)
        labels.append(label)
        if len(images) == BATCH:
            flipped, _, _ = flip(np.stack(images))
            yield {"image": normalize(flipped), "label": torch.as_tensor(labels)}
            images, labels = [], []
    if images:
        flipped, _, _ = flip(np.stack(images))
        yield {"image": normalize(flipped), "label": torch.as_tensor(labels)}


def write_webdataset(folder: Path, out: Path) -> int:
    import webdataset as wds

    out.mkdir(parents=True, exist_ok=True)
    classes = sorted(p.name for p in folder.iterdir())
    with wds.ShardWriter(str(out / "shard-%04d.tar"), maxcount=1000, verbose=0) as sink:
        for label, name in enumerate(classes):
            for path in sorted((folder / name).iterdir()):
                sink.write({"__key__": f"{name}_{path.stem}", "jpg": path.read_bytes(), "cls": str(label)})
    return folder_bytes(out)


# ---- the input benchmark ----------------------------------------------------------------------------------------
def run_input(args) -> dict:
    from tests.team.services import S3Server

    from cnnlab.data.shards import upload

    work = Path(tempfile.mkdtemp(prefix="cnnlab-shards-bench-"))
    try:
        folder = work / "photos"
        jpeg_bytes = write_photo_folder(folder, args.images, quality=args.quality)
        arrays_meta, arrays_s = prepare(folder, work / "arrays", "arrays")
        shards_meta, shards_s = prepare(folder, work / "shards", "shards")
        sizes = {
            "jpeg_folder": folder_bytes(folder),
            "shards": folder_bytes(work / "shards"),
            "arrays_224": folder_bytes(work / "arrays"),
        }
        if args.webdataset:
            sizes["webdataset"] = write_webdataset(folder, work / "wds")
        files = sorted(p for p in folder.rglob("*.jpg"))
        encoded = [p.read_bytes() for p in files]
        labels = [int(p.parent.name[len("class") :]) for p in files]
        mean, std = shards_meta["mean"], shards_meta["std"]

        s3 = S3Server().start()
        env = {
            "AWS_ENDPOINT_URL": s3.url,
            "AWS_ACCESS_KEY_ID": s3.access_key,
            "AWS_SECRET_ACCESS_KEY": s3.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        os.environ.update(env)
        try:
            s3.client().create_bucket(Bucket="bench")
            upload(work / "shards", "s3://bench/photos")
            loaders = {
                "bare": lambda: bare_batches(encoded, labels, mean, std),
                "shards": lambda: shard_batches(str(work / "shards"), mean, std, str(work / "cache-local")),
                "s3": lambda: shard_batches("s3://bench/photos", mean, std, str(work / f"cache-s3-{time.time_ns()}")),
                "arrays": lambda: array_batches(work / "arrays"),
            }
            if args.webdataset:
                last = len(list((work / "wds").iterdir())) - 1
                pattern = str(work / "wds" / f"shard-{{0000..{last:04d}}}.tar")
                loaders["webdataset"] = lambda: webdataset_batches(pattern, mean, std)
            rounds: dict[str, list[dict]] = {name: [] for name in loaders}
            for round_ in range(args.rounds):
                for name, make in loaders.items():
                    result = measure(make())
                    rounds[name].append(result)
                    print(f"round {round_ + 1} {name}: {result}", flush=True)
        finally:
            s3.stop()
        best = {name: max(results, key=lambda r: r["images_per_cpu_s"]) for name, results in rounds.items()}
        return {
            "cpu": cpu_name(),
            "images": args.images,
            "jpeg_quality": args.quality,
            "bytes": sizes,
            "prepare_seconds": {"arrays_224": round(arrays_s, 1), "shards": round(shards_s, 1)},
            "shards": len(sum(shards_meta["shards"].values(), [])),
            "rounds": rounds,
            "best": best,
            "shards_vs_bare": round(best["shards"]["images_per_cpu_s"] / best["bare"]["images_per_cpu_s"], 3),
            "jpeg_vs_shards": round(sizes["shards"] / sizes["jpeg_folder"], 3),
            "arrays_vs_shards": round(sizes["arrays_224"] / sizes["shards"], 2),
            "arrays_samples": arrays_meta["num_samples"],
            "written_jpeg_bytes": jpeg_bytes,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---- the memory benchmark ---------------------------------------------------------------------------------------
def peak_memory(command: list[str], env: dict | None = None) -> tuple[int, int, float]:
    """Run `command`; the peak proportional set size (PSS: shared pages counted once, fairly split) of it and its
    children together, the peak PSS of one child alone (a decode or loader worker), sampled every 20 ms, and
    the seconds it took."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env={**os.environ, **(env or {})})
    root, total_peak, child_peak = psutil.Process(process.pid), 0, 0
    while process.poll() is None:
        try:
            children = root.children(recursive=True)
            sizes = [p.memory_full_info().pss for p in children]
            total_peak = max(total_peak, root.memory_full_info().pss + sum(sizes))
            child_peak = max([child_peak, *sizes])
        except psutil.Error:
            pass
        time.sleep(0.02)
    if process.returncode:
        raise SystemExit(f"{command} exited {process.returncode}")
    return total_peak, child_peak, time.perf_counter() - started


def run_memory(args) -> dict:
    work = Path(tempfile.mkdtemp(prefix="cnnlab-shards-memory-"))
    results = {"cpu": cpu_name(), "counts": {}}
    try:
        for count in [int(c) for c in args.counts.split(",")]:
            folder = work / f"photos-{count}"
            write_photo_folder(folder, count, size=(160, 120))
            out = work / f"shards-{count}"
            prep_total, prep_worker, prep_s = peak_memory([sys.executable, __file__, "_prepare", str(folder), str(out)])
            read_total, read_worker, read_s = peak_memory([sys.executable, __file__, "_stream", str(out)])
            results["counts"][count] = {
                "jpeg_bytes": folder_bytes(folder),
                "prepare_peak_pss_mib": round(prep_total / 2**20),
                "prepare_worker_peak_pss_mib": round(prep_worker / 2**20),
                "prepare_s": round(prep_s, 1),
                "training_peak_pss_mib": round(read_total / 2**20),
                "training_worker_peak_pss_mib": round(read_worker / 2**20),
                "stream_s": round(read_s, 1),
            }
            print(count, results["counts"][count], flush=True)
            shutil.rmtree(folder)
            shutil.rmtree(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


def _prepare_child(folder: str, out: str) -> None:
    prepare(Path(folder), Path(out), "shards", image_size=64)


def _stream_child(location: str) -> None:
    """One epoch of the train split through a loader with one worker process (a training worker)."""
    from cnnlab.data.augment import build_augmentation
    from cnnlab.data.preprocess import BatchNormalizer
    from cnnlab.data.shards import RecordDecoder, ShardBatches, shard_loader, shard_split

    meta = json.loads((Path(location) / "meta.json").read_text())
    dataset = shard_split(
        location, "train", RecordDecoder(64, 3, list(CROP), "error"), shuffle=True, seed=0, cache={"limit": "1GB"}
    )
    collate = ShardBatches(
        build_augmentation(FLIP, with_boxes=False), BatchNormalizer(meta["mean"], meta["std"]), False, False
    )
    seen = sum(
        len(b["label"]) for b in shard_loader(dataset, batch_size=BATCH, num_workers=1, collate_fn=collate, train=True)
    )
    assert seen == meta["split_sizes"]["train"], (seen, meta["split_sizes"])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("_prepare", "_stream"):
        (_prepare_child if sys.argv[1] == "_prepare" else _stream_child)(*sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("input", help="bytes on disk and training input speed, against the bare decoder")
    one.add_argument("--images", type=int, default=10000)
    one.add_argument("--rounds", type=int, default=3)
    one.add_argument("--webdataset", action="store_true", help="also WebDataset tar shards (pip install webdataset)")
    one.add_argument("--quality", type=int, default=75, help="JPEG quality of the photos (75: libjpeg's default)")
    two = commands.add_parser("memory", help="peak memory of prepare and of a training worker at each dataset size")
    two.add_argument("--counts", default="10000,100000")
    args = parser.parse_args()
    result = run_input(args) if args.command == "input" else run_memory(args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
