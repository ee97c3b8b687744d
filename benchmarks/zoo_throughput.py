"""Training throughput of the architecture zoo on CPU, side by side with a LeNet-5 baseline.

For every selected model and input size: one training step (forward, cross-entropy, backward) on a
random batch, repeated; reported as images per second of wall time and per CPU second of the process
(on a shared machine wall time also counts the time other processes held the cores), next to the
model's parameters and multiply-accumulates per image (cnnlab.models.summary, on the meta device).
At 32 px the models with a `small_input` stem use it (CIFAR-style, 10 classes); at 224 px every model
uses its ImageNet stem (1000 classes). Models whose minimum input exceeds a size are skipped there.
The baseline row, LeNet-5 at 32x32x3, is measured in the same run; "vs LeNet-5" is each model's
images/s divided by the baseline's.

    .venv/bin/python benchmarks/zoo_throughput.py [--models 'resnet18,vgg*'] [--models-224 PATTERNS]
        [--sizes 32,224] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import fnmatch
import gc
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cnnlab.config import ConfigError  # noqa: E402
from cnnlab.models import available_models, build_backbone, model_spec  # noqa: E402
from cnnlab.models.summary import summarize  # noqa: E402

BASELINE = ("lenet5", 32)


def has_small_input(name: str) -> bool:
    try:
        with torch.device("meta"):
            build_backbone(name, num_classes=10, in_channels=3, image_size=224, small_input=True)
    except ConfigError:
        return False
    return True


def model_kwargs(name: str, size: int) -> dict | None:
    """Builder kwargs at `size`, or None when the model cannot take that input."""
    kwargs = {"small_input": True} if size < 64 and has_small_input(name) else {}
    try:
        with torch.device("meta"):
            build_backbone(name, num_classes=10, in_channels=3, image_size=size, **kwargs)
    except ConfigError:
        return None
    return kwargs


def measure(name: str, size: int, kwargs: dict, batch_size: int, repeats: int) -> dict:
    """Best of `repeats` timed training steps after one warm-up step."""
    num_classes = 10 if size < 64 else 1000
    with torch.device("meta"):
        meta_model = build_backbone(name, num_classes=num_classes, in_channels=3, image_size=size, **kwargs)
    summary = summarize(meta_model, (3, size, size))
    torch.manual_seed(0)
    model = build_backbone(name, num_classes=num_classes, in_channels=3, image_size=size, **kwargs).train()
    images = torch.randn(batch_size, 3, size, size)
    labels = torch.randint(0, num_classes, (batch_size,))

    def step() -> None:
        model.zero_grad(set_to_none=False)  # noqa: F821 (ruff misreads the `del model` below)
        nn.functional.cross_entropy(model(images), labels).backward()  # noqa: F821

    step()  # warm-up: allocations, oneDNN primitive creation
    best_wall, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        step()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    del model
    gc.collect()
    return {
        "name": name,
        "size": size,
        "small_input": bool(kwargs.get("small_input")),
        "params": summary.total_params,
        "macs": summary.total_macs,
        "images_per_s": batch_size / best_wall,
        "images_per_cpu_s": batch_size / best_cpu,
    }


def format_table(results: list[dict], baseline: dict) -> str:
    lines = [
        "| model | input | small_input | params | MACs / image | images/s (wall) | images per CPU-s | vs LeNet-5 |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        name = f"**{r['name']}** (baseline)" if (r["name"], r["size"]) == BASELINE else r["name"]
        lines.append(
            f"| {name} | {r['size']}x{r['size']} | {'yes' if r['small_input'] else 'no'} | {r['params']:,} | "
            f"{_human(r['macs'])} | {r['images_per_s']:,.1f} | {r['images_per_cpu_s']:,.1f} | "
            f"{r['images_per_s'] / baseline['images_per_s']:.4f}x |"
        )
    return "\n".join(lines)


def _human(macs: int) -> str:
    return f"{macs / 1e9:.2f} G" if macs >= 1e9 else f"{macs / 1e6:.1f} M"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="*", help="comma-separated names or glob patterns (default: all)")
    parser.add_argument("--sizes", default="32,224", help="comma-separated square input sizes")
    parser.add_argument("--models-224", default=None, help="a narrower model filter for sizes >= 64 px")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per model (best is reported)")
    # One thread by default: on the shared 2-core box, 2 intra-op threads waiting on busy cores made
    # LeNet-5 up to 47x and ResNet-18 no faster than one thread (see RESULTS.md).
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    def select(pattern_list: str) -> list[str]:
        patterns = [p.strip() for p in pattern_list.split(",") if p.strip()]
        return [n for n in available_models() if any(fnmatch.fnmatch(n, p) for p in patterns)]

    sizes = [int(s) for s in args.sizes.split(",")]
    small_models = select(args.models)
    large_models = select(args.models_224) if args.models_224 else small_models
    if not small_models:
        parser.error(f"--models {args.models!r} matches none of: {', '.join(available_models())}")

    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch_size}, best of {args.repeats}")
    baseline = measure(*BASELINE, {}, args.batch_size, args.repeats)
    results = [baseline]
    for size in sizes:
        for name in small_models if size < 64 else large_models:
            if (name, size) == BASELINE:
                continue
            kwargs = model_kwargs(name, size)
            if kwargs is None:
                print(f"skip {name} at {size}px: below its minimum input ({model_spec(name).min_input_size} px)")
                continue
            result = measure(name, size, kwargs, args.batch_size, args.repeats)
            print(f"{name:20s} {size:4d}px {result['images_per_s']:9.1f} images/s", flush=True)
            results.append(result)
    print()
    print(format_table(results, baseline))


if __name__ == "__main__":
    main()
