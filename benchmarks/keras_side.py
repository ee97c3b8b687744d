"""The speedrun recipe in Keras 3 on its torch backend: what a user of the source lectures' labs would write.

The same prepared arrays (cnnlab's train / val / test splits of Fashion-MNIST at 28 px), normalisation, network
(conf/model/speednet.yaml's widths and depths as Conv2D + BatchNormalization + ReLU + MaxPooling2D, global max-pool,
Dense), optimiser (SGD with Nesterov momentum and weight decay), one-cycle learning rate, label smoothing, batch
size, epochs, flip-and-shift augmentation, bf16 mixed precision and flip test-time augmentation as the composed
cnnlab config says. Where Keras has no equal the difference is named: Keras' SGD cannot cycle its momentum (torch's
OneCycleLR moves it between 0.85 and 0.95; here 0.9), and its weight decay is decoupled (torch's SGD adds it to the
gradient).

    KERAS_BACKEND=torch .venv/bin/python benchmarks/keras_side.py <project> -- <cnnlab overrides>

prints one JSON line: fit seconds, images, test accuracy (what benchmarks/speedrun.py reads).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")


def one_cycle(max_lr: float, total_steps: int, pct_start: float, div_factor: float = 25.0, final_div: float = 1e4):
    """torch.optim.lr_scheduler.OneCycleLR's cosine learning rate (its defaults), as a Keras schedule."""
    import keras

    initial, final = max_lr / div_factor, max_lr / div_factor / final_div
    warm = float(pct_start * total_steps) - 1  # OneCycleLR's phase ends

    class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            step = keras.ops.cast(step, "float32")

            def anneal(start, end, fraction):
                return end + (start - end) / 2.0 * (keras.ops.cos(math.pi * fraction) + 1)

            rising = anneal(initial, max_lr, step / warm)
            falling = anneal(max_lr, final, (step - warm) / (total_steps - 1 - warm))
            return keras.ops.where(step <= warm, rising, falling)

    return OneCycle()


def network(widths, depths, classes: int, side: int, augment: bool):
    """SpeedNet (src/cnnlab/models/speednet.py) in Keras layers; the augmentation as the model's first layers."""
    import keras
    from keras import layers

    inputs = keras.Input((side, side, 1))
    x = inputs
    if augment:  # conf/augment/speedrun.yaml: flip half the time, shift up to 7% each way, black border
        x = layers.RandomFlip("horizontal")(x)
        x = layers.RandomTranslation(0.07, 0.07, fill_mode="constant", fill_value=0.0)(x)
    for width, depth in zip(widths, depths):
        for _ in range(depth):
            x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)  # torch's BatchNorm2d defaults
            x = layers.ReLU()(x)
        x = layers.MaxPooling2D(2, padding="same")(x)  # ceil mode: 28 -> 14 -> 7 -> 4
    x = layers.GlobalMaxPooling2D()(x)
    outputs = layers.Dense(classes, dtype="float32")(x)  # logits in float32 under mixed precision
    return keras.Model(inputs, outputs)


def keras_side(project: Path, overrides: list[str]) -> dict:
    import keras
    import numpy as np
    from benchmarks.overhead import prepared

    from cnnlab.data.prepared import PreparedDataset

    cfg, meta = prepared(project, overrides)
    keras.utils.set_random_seed(int(cfg.seed))
    bf16 = cfg.trainer.get("precision") == "bf16-mixed"
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if bf16 else "float32")
    started, cpu = time.perf_counter(), time.process_time()  # from reading the arrays, as cnnlab's fit clock
    data = PreparedDataset(cfg.data.prepared_dir)
    mean, std = float(meta["mean"][0]), float(meta["std"][0])

    def split(name: str):
        index = data.splits[name]
        images = (np.asarray(data.images[index], dtype=np.float32) / 255.0 - mean) / std
        return images.reshape(len(index), data.images.shape[1], data.images.shape[2], 1), data.labels[index]

    (x_train, y_train), (x_val, y_val) = split("train"), split("val")
    classes = len(data.classes)
    epochs, batch = int(cfg.trainer.max_epochs), int(cfg.data.batch_size)
    steps = epochs * math.ceil(len(x_train) / batch)
    model = network(cfg.model.widths, cfg.model.depths, classes, x_train.shape[1], augment=cfg.augment.name != "none")
    schedule = dict(cfg.scheduler.get("scheduler") or {})
    lr = float(cfg.optimizer.lr)
    rate = (
        one_cycle(lr, steps, float(schedule.get("pct_start", 0.3)))
        if "OneCycle" in schedule.get("_target_", "")
        else lr
    )
    model.compile(
        optimizer=keras.optimizers.SGD(
            learning_rate=rate,
            momentum=float(cfg.optimizer.get("momentum", 0.9)),
            nesterov=bool(cfg.optimizer.get("nesterov", False)),
            weight_decay=float(cfg.optimizer.get("weight_decay", 0.0)) or None,
        ),
        loss=keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=float(cfg.task.module.get("label_smoothing", 0.0))
        ),
        metrics=["accuracy"],
    )
    model.fit(
        x_train,
        keras.utils.to_categorical(y_train, classes),
        batch_size=batch,
        epochs=epochs,
        validation_data=(x_val, keras.utils.to_categorical(y_val, classes)),
        shuffle=True,
        verbose=0,
    )
    fit_s = time.perf_counter() - started
    x_test, y_test = split("test")
    logits = model.predict(x_test, batch_size=batch, verbose=0)
    if cfg.task.module.get("tta_flip", False):
        logits = (logits + model.predict(x_test[:, :, ::-1], batch_size=batch, verbose=0)) / 2
    return {
        "fit_s": fit_s,
        "fit_cpu_s": time.process_time() - cpu,
        "images": epochs * len(x_train),
        "test_acc": float((np.asarray(logits).argmax(1) == y_test).mean()),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
    }


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    if len(sys.argv) < 2 or (len(sys.argv) > 2 and sys.argv[2] != "--"):
        raise SystemExit(__doc__)
    print(json.dumps(keras_side(Path(sys.argv[1]), sys.argv[3:])))
