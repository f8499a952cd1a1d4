"""Fashion-MNIST: the `image_classification_small` ViT against logistic regression, a small CNN and
today's default (plain-patch) ViT, with images/s of the input pipeline and of training.

On the official files in `../shared/datasets/fashion-mnist/` (60,000 training and 10,000 test images,
28x28 gray, 10 classes): the training file is split as the config says (a seeded stratified 10 %
for validation, so 54,000 to train on) and the official test file is the test set. Parts:
  - `small`: `ImageClassifier.train` with the shipped `image_classification_small` config, unchanged
    (its augmentation, schedule and epochs; the best validation epoch is kept);
  - `plain`: the default config (`image_classification.yaml`, the 8x8 regime: 2x2 patches, 196 tokens
    at 28x28, batch 32) with `--plain-epochs` epochs, its schedule fitted to them;
  - `cnn`: `two_block_cnn`, the classic small CNN for 28x28 images, on the small config's training
    pipeline (same augmentation, smoothed one-hot labels, AdamW + warm-up/cosine, XLA) for `--cnn-epochs`;
  - `logistic_regression`: scikit-learn on the 784 pixels / 255, C chosen on validation;
  - `throughput`: the small config's input pipeline alone (augmented training batches, one pass over
    the training set) and its training steps in steady state, in images/s (medians).
Each model part gives test accuracy, parameters and wall-clock / process CPU training time. Prints one
JSON object on stdout (and writes it to `--output` when given).

    python benchmarks/bench_fashion_mnist.py                        # every part, in one run
    python benchmarks/bench_fashion_mnist.py --part small --part throughput
    python benchmarks/bench_fashion_mnist.py --part small --seed 1  # another training seed (the split stays)
    python benchmarks/bench_fashion_mnist.py --quick                # smoke run: tiny models, 1 epoch, trained
                                                                    # on half the test file (not a result)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
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

from bench_vit import cnn_baseline, logistic_regression, training_throughput  # noqa: E402
from common import Stopwatch, emit, load_average, machine_info  # noqa: E402
from suite.vision.task import ImageClassifier  # noqa: E402

DATA = REPO.parent / "shared" / "datasets" / "fashion-mnist"
TRAIN_FILE, TEST_FILE = "train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"
CLASS_NAMES = ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
               "ankle boot"]
SMALL, PLAIN = "image_classification_small", "image_classification"
PARTS = ("logistic_regression", "cnn", "plain", "small", "throughput")
TARGET_ACCURACY, TARGET_SECONDS = 0.93, 3600
LOGREG_C = (0.01, 0.1, 1.0)
QUICK_OVERRIDES = {"backbone.num_layers": 1, "backbone.d_model": 16, "backbone.num_heads": 2,
                   "backbone.ff_dim": 32, "conv_filters": 8, "epochs": 1}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help=f"the Fashion-MNIST folder (default: {DATA})")
    parser.add_argument("--part", action="append", choices=PARTS, help="run only these parts (repeatable)")
    parser.add_argument("--plain-epochs", type=int, default=2, help="epochs of the default-config ViT (default: 2)")
    parser.add_argument("--cnn-epochs", type=int, default=10, help="CNN training epochs (default: 10)")
    parser.add_argument("--seed", type=int, default=None,
                        help="training seed of `small` (weights and augmentation draws; default: the config's)")
    parser.add_argument("--repetitions", type=int, default=3, help="timed repetitions of each throughput figure")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny models, half the test file to train on")
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON object to this file")
    parser.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2), help="Keras fit verbosity (stderr)")
    args = parser.parse_args(argv)
    if min(args.plain_epochs, args.cnn_epochs, args.repetitions) < 1:
        parser.error("--plain-epochs, --cnn-epochs and --repetitions must be >= 1.")
    if not (args.data / TRAIN_FILE).is_file():
        parser.error(f"{args.data / TRAIN_FILE} is missing: --data must be the Fashion-MNIST folder.")
    return args


def configs(args) -> dict:
    """The small and the default config on the Fashion-MNIST files (tiny models with `--quick`)."""
    data = {"data.train": str(args.data / TRAIN_FILE), "data.test": str(args.data / TEST_FILE),
            "data.class_names": CLASS_NAMES}
    quick = {}
    if args.quick:
        quick = {**QUICK_OVERRIDES, "data.train": str(args.data / TEST_FILE), "data.validation_fraction": 0.5}
    return {
        "small": ImageClassifier.resolve_config(
            SMALL, {**data, **quick, **({} if args.seed is None else {"training.seed": args.seed})}
        ),
        "plain": ImageClassifier.resolve_config(PLAIN, {**data, **quick, "epochs": 1 if args.quick else args.plain_epochs}),
    }


def two_block_cnn(task: ImageClassifier) -> keras.Model:
    """Rescaled pixels -> 2 x (3x3 ReLU conv, 2x2 max-pool), 32 and 64 filters -> 128 ReLU -> logits
    (the digits benchmark's `small_cnn` ends in global pooling, which loses the layout of 28x28 images)."""
    pre = task.preprocessor
    images = keras.Input((*pre.image_size, pre.channels))
    x = keras.layers.Rescaling(pre.scale, pre.offset)(images)
    for filters in (32, 64):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Dense(128, activation="relu")(keras.layers.Flatten()(x))
    x = keras.layers.Dropout(0.2)(x)
    return keras.Model(images, keras.layers.Dense(pre.num_classes)(x), name="two_block_cnn")


def vit(config, parts: dict, verbose: int) -> dict:
    """Trains a ViT with `config` on its data (the split `parts` came from); test accuracy, size and time."""
    with Stopwatch() as watch:
        task = ImageClassifier.train(config=config, verbose=verbose)
    metrics = task.training_metrics
    test = task.evaluate(parts["test"])
    epochs = metrics["epochs_run"]
    return {
        "test_accuracy": round(test["accuracy"], 4),
        "validation_accuracy": round(metrics["validation"]["accuracy"], 4),
        "epochs": epochs,
        "best_epoch": metrics["best_epoch"],
        "parameters": task.model.count_params(),
        "tokens": int(task.model.get_layer("patch_tokens").output.shape[1]),
        **watch.as_dict(),
        "images_per_s_end_to_end": round(epochs * len(parts["train"]) / watch.wall, 1),
    }


def throughput(config, train, repetitions: int) -> dict:
    """Images/s of the input pipeline alone (one pass of augmented training batches) and of a fresh
    model's training epochs on a 10,240-image subset (`bench_vit.training_throughput`)."""
    task = ImageClassifier.create(train, config)
    rates = []
    for _ in range(repetitions):
        start, count = time.perf_counter(), 0
        for images, _ in task.dataset(train, training=True):
            count += int(images.shape[0])
        rates.append(count / (time.perf_counter() - start))
    training = training_throughput(train.subset(np.arange(min(len(train), 10_240))), config, repetitions)
    pipeline = statistics.median(rates)
    return {
        "input_pipeline_images_per_s": round(pipeline, 1),
        "training_images_per_s": training["images_per_s_median"],
        "batch_size": training["batch_size"],
        "pipeline_to_training_ratio": round(pipeline / training["images_per_s_median"], 1),
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    chosen = args.part or list(PARTS)
    result = {"benchmark": "fashion_mnist_image_classification", "load_average_start": load_average(),
              "machine": machine_info(keras_cv=keras_cv.__version__, scikit_learn=sklearn.__version__)}
    config = configs(args)
    parts = ImageClassifier.data_parts(config["small"])
    result["config"] = {
        "quick": args.quick, "parts": chosen, "small": SMALL, "seed": config["small"].training.seed, "plain": PLAIN,
        "plain_epochs": args.plain_epochs, "cnn_epochs": args.cnn_epochs,
        "sizes": {name: len(part) for name, part in parts.items()},
    }
    figures = {}
    if "logistic_regression" in chosen:
        cs = LOGREG_C[1:2] if args.quick else LOGREG_C
        figures["logistic_regression"] = logistic_regression(parts["train"], parts["validation"], parts["test"], cs)
    if "cnn" in chosen:
        task = ImageClassifier.create(parts["train"], config["small"])
        cnn = cnn_baseline(task, parts["train"], parts["test"], 1 if args.quick else args.cnn_epochs, two_block_cnn)
        cnn["images_per_s_end_to_end"] = round(cnn["epochs"] * len(parts["train"]) / cnn["train_seconds"], 1)
        figures["cnn"] = cnn
    if "plain" in chosen:
        figures["plain_vit"] = vit(config["plain"], parts, args.verbose)
    if "small" in chosen:
        figures["small_vit"] = vit(config["small"], parts, args.verbose)
        result["target"] = {
            "test_accuracy_min": TARGET_ACCURACY, "train_seconds_max": TARGET_SECONDS,
            "accuracy_met": figures["small_vit"]["test_accuracy"] >= TARGET_ACCURACY,
            "time_met": figures["small_vit"]["train_seconds"] <= TARGET_SECONDS,
        }
    result["figures"] = figures
    if "throughput" in chosen:
        result["throughput"] = throughput(config["small"], parts["train"], args.repetitions)
    result["load_average_end"] = load_average()
    emit(result, args.output)
    return result


if __name__ == "__main__":
    main()
