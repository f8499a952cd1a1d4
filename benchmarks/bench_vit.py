"""Digits: the Vision Transformer against logistic regression and a small CNN, plus images/s.

In one run, on scikit-learn's 8x8 digits with the fixed seeded split of the default config
`suite/vision/configs/image_classification.yaml` (stratified: 20 % test, then 10 % of the rest for validation):
  - `vit`: `ImageClassifier.train` with the default config (its augmentation, schedule and epochs);
  - `logistic_regression`: scikit-learn on the 64 pixels scaled to [0, 1], C chosen on validation;
  - `cnn`: a small Keras CNN (3 conv layers) trained on the ViT's own training pipeline (same
    augmentation, one-hot smoothed labels, AdamW + warm-up/cosine, XLA) for `--cnn-epochs`.
Each gets test accuracy and wall-clock / process CPU training time. Throughput (medians over
`--repetitions`, after warm-up): ViT training images/s in steady state (epochs after the first, fresh
model, augmentation on), ViT XLA inference images/s at batch 256, and the exported SavedModel's
`serving_default` on PNG bytes and `predict_images` on uint8 pixels at batch 64. Prints one JSON object
on stdout (and writes it to `--output` when given).

    python benchmarks/bench_vit.py                 # full run (the default config)
    python benchmarks/bench_vit.py --quick         # smoke run: tiny ViT and CNN, 2 epochs each
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import keras  # noqa: E402
import keras_cv  # noqa: E402
import numpy as np  # noqa: E402
import sklearn  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from common import Stopwatch, emit, load_average, machine_info  # noqa: E402
from suite.core.inference import inference_function  # noqa: E402
from suite.core.optim import warmup_schedule  # noqa: E402
from suite.vision.task import ImageClassifier  # noqa: E402

CONFIG = ImageClassifier.config_file()
TARGET_ACCURACY = 0.98
TARGET_SECONDS = 600
LOGREG_C = (0.01, 0.1, 1.0, 10.0)
QUICK_OVERRIDES = {
    "backbone.num_layers": 1,
    "backbone.d_model": 16,
    "backbone.num_heads": 2,
    "backbone.ff_dim": 32,
    "epochs": 2,
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny ViT and CNN, 2 epochs each")
    parser.add_argument("--cnn-epochs", type=int, default=40, help="CNN training epochs (default: 40)")
    parser.add_argument("--repetitions", type=int, default=5, help="timed repetitions of each throughput figure")
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON object to this file")
    parser.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2), help="Keras fit verbosity (stderr)")
    args = parser.parse_args(argv)
    if args.cnn_epochs < 1 or args.repetitions < 1:
        parser.error("--cnn-epochs and --repetitions must be >= 1.")
    return args


def logistic_regression(train, validation, test, cs=LOGREG_C) -> dict:
    """Multinomial logistic regression on pixels / 255; C picked from `cs` on validation."""
    def features(data):
        return data.images.reshape(len(data), -1) / 255.0

    with Stopwatch() as watch:
        fits = {c: LogisticRegression(C=c, max_iter=5000).fit(features(train), train.labels) for c in cs}
        scores = {c: float(m.score(features(validation), validation.labels)) for c, m in fits.items()}
        best = max(scores, key=scores.get)
    return {
        "test_accuracy": round(float(fits[best].score(features(test), test.labels)), 4),
        "validation_accuracy": round(scores[best], 4),
        "C": best,
        **watch.as_dict(),
        "note": "train time covers fitting all C values",
    }


def small_cnn(task: ImageClassifier) -> keras.Model:
    """Rescaled pixels -> 3 ReLU conv layers (32, 64, 64; 3x3, one 2x2 max-pool) -> global pooling -> logits."""
    pre = task.preprocessor
    images = keras.Input((*pre.image_size, pre.channels))
    x = keras.layers.Rescaling(pre.scale, pre.offset)(images)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    return keras.Model(images, keras.layers.Dense(pre.num_classes)(x), name="small_cnn")


def cnn_baseline(task: ImageClassifier, train, test, epochs: int, build=small_cnn) -> dict:
    """The CNN `build(task)` (default `small_cnn`) on the ViT's training pipeline (augmentation,
    one-hot smoothed labels)."""
    config = task.config
    training = task.dataset(train, training=True)
    model = build(task)
    steps = epochs * (len(train) // config.training.batch_size)
    model.compile(
        optimizer=keras.optimizers.AdamW(warmup_schedule(config.training, steps), weight_decay=1e-4),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=config.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        jit_compile=True,
    )
    with Stopwatch() as watch:
        model.fit(training, epochs=epochs, verbose=0)
    logits = model.predict(test.images, batch_size=256, verbose=0)
    return {
        "test_accuracy": round(float((logits.argmax(-1) == test.labels).mean()), 4),
        "epochs": epochs,
        "parameters": model.count_params(),
        **watch.as_dict(),
    }


class EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.ends = [time.perf_counter()]

    def on_epoch_end(self, epoch, logs=None):
        self.ends.append(time.perf_counter())


def training_throughput(train, config, repetitions: int) -> dict:
    """Images/s of a fresh ViT's `fit` epochs (augmentation on), the first (compiling) epoch excluded."""
    task = ImageClassifier.create(ImageClassifier.read(train, config), config)
    task.compile(total_steps=1000)
    timer = EpochTimer()
    task.model.fit(task.dataset(train, training=True), epochs=repetitions + 1, callbacks=[timer], verbose=0)
    per_epoch = (len(train) // config.training.batch_size) * config.training.batch_size
    rates = [per_epoch / (b - a) for a, b in zip(timer.ends[1:], timer.ends[2:])]
    return {"images_per_s_median": round(statistics.median(rates), 1), "images_per_s_min": round(min(rates), 1),
            "images_per_s_max": round(max(rates), 1), "batch_size": config.training.batch_size}


def timed(call, batches: list, batch_size: int, repetitions: int) -> dict:
    call(batches[0])
    rates = []
    for _ in range(repetitions):
        start = time.perf_counter()
        for batch in batches:
            call(batch)
        rates.append(len(batches) * batch_size / (time.perf_counter() - start))
    return {"images_per_s_median": round(statistics.median(rates), 1), "images_per_s_min": round(min(rates), 1),
            "images_per_s_max": round(max(rates), 1), "batch_size": batch_size}


def inference_throughput(task: ImageClassifier, test, repetitions: int) -> dict:
    """XLA inference on float pixels (batch 256) and the SavedModel's signatures (batch 64)."""
    pixels = np.concatenate([test.images] * 4)
    xla = inference_function(task.model, jit_compile=True)
    big = [tf.constant(pixels[i:i + 256]) for i in range(0, len(pixels) - 255, 256)]
    figures = {"xla_python": timed(lambda b: xla(b).numpy(), big, 256, repetitions)}
    with tempfile.TemporaryDirectory() as export_dir:
        model = tf.saved_model.load(str(task.export(export_dir, "digits")))
        serve, raw = model.signatures["serving_default"], model.signatures["predict_images_uint8"]
        uint8 = pixels.astype(np.uint8)
        pngs = [tf.io.encode_png(image).numpy() for image in uint8]
        bytes_batches = [tf.constant(pngs[i:i + 64]) for i in range(0, len(pngs) - 63, 64)]
        pixel_batches = [tf.constant(uint8[i:i + 64]) for i in range(0, len(uint8) - 63, 64)]
        figures["saved_model_png_bytes"] = timed(
            lambda b: serve(image_bytes=b)["class_id"].numpy(), bytes_batches, 64, repetitions)
        figures["saved_model_uint8_pixels"] = timed(
            lambda b: raw(images=b)["class_id"].numpy(), pixel_batches, 64, repetitions)
    return figures


def main(argv=None) -> dict:
    args = parse_args(argv)
    machine = machine_info(keras_cv=keras_cv.__version__, scikit_learn=sklearn.__version__)
    result = {"benchmark": "digits_image_classification", "machine": machine, "load_average_start": load_average()}
    overrides = dict(QUICK_OVERRIDES) if args.quick else {}
    cnn_epochs = 2 if args.quick else args.cnn_epochs
    config = ImageClassifier.resolve_config(CONFIG, overrides)
    parts = ImageClassifier.data_parts(config)
    train, validation, test = parts["train"], parts["validation"], parts["test"]
    result["config"] = {"quick": args.quick, "config": str(CONFIG.relative_to(REPO)), "overrides": overrides,
                        "sizes": {"train": len(train), "validation": len(validation), "test": len(test)},
                        "split_seed": config.data.split_seed, "training_seed": config.training.seed}

    figures = {"logistic_regression": logistic_regression(train, validation, test)}
    with Stopwatch() as watch:
        vit = ImageClassifier.train(config=config, verbose=args.verbose)  # the split `parts` holds
    test_metrics = vit.evaluate(test)
    figures["vit"] = {
        "test_accuracy": round(test_metrics["accuracy"], 4),
        f"test_top_{vit.top_k}_accuracy": round(test_metrics["top_k_accuracy"], 4),
        "validation_accuracy": round(vit.training_metrics["validation"]["accuracy"], 4),
        "epochs": vit.config.training.epochs,
        "parameters": vit.model.count_params(),
        **watch.as_dict(),
    }
    figures["cnn"] = cnn_baseline(vit, train, test, cnn_epochs)
    result["figures"] = figures
    result["target"] = {
        "test_accuracy_min": TARGET_ACCURACY, "train_seconds_max": TARGET_SECONDS,
        "accuracy_met": figures["vit"]["test_accuracy"] >= TARGET_ACCURACY,
        "time_met": figures["vit"]["train_seconds"] < TARGET_SECONDS,
    }
    result["throughput"] = {
        "training": training_throughput(train, config, args.repetitions),
        "inference": inference_throughput(vit, test, args.repetitions),
    }
    result["load_average_end"] = load_average()
    emit(result, args.output)
    return result


if __name__ == "__main__":
    main()
