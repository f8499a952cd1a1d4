"""ImageClassifier: ViT stem shapes, position interpolation, augmentation, learning, save/load, export, CLI."""

import base64
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import suite
from suite.cli import main
from suite.config import ConfigError
from suite.vision.data import ImageData
from suite.tasks import ImageClassifier

CLASSES = ("bottom", "left", "top")
TINY = {
    "patch_size": 2,
    "backbone": {"num_layers": 1, "d_model": 16, "num_heads": 2, "ff_dim": 32, "dropout": 0.0, "position": "none"},
    "head_dropout": 0.0,
    "augmentation": {"rand_augment": False, "rotation": 0.0, "zoom": 0.0},
    "training": {"epochs": 12, "batch_size": 16, "learning_rate": 0.005, "warmup_fraction": 0.0},
}


def bars(per_class: int = 24, seed: int = 0) -> ImageData:
    """8x8 gray images with a bright bar at the bottom, left or top, on noise; labels by name."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 60, (3 * per_class, 8, 8)).astype(np.float32)
    labels = np.repeat(np.arange(3), per_class)
    images[labels == 0, 6:, :] = 255
    images[labels == 1, :, :2] = 255
    images[labels == 2, :2, :] = 255
    return ImageData(images[..., None], labels.astype(np.int32), CLASSES)


def png(image: np.ndarray) -> bytes:
    return tf.io.encode_png(np.asarray(image).astype(np.uint8)).numpy()


@pytest.fixture(scope="module")
def classifier() -> ImageClassifier:
    return ImageClassifier.train(bars(), TINY, verbose=0)


def test_config_errors_name_the_key(repo_root):
    with pytest.raises(ConfigError, match=r"image_size \(6, 6\) must be a multiple of patch_size \(4\)"):
        ImageClassifier.resolve_config({"image_size": [6, 6], "patch_size": 4})
    with pytest.raises(ConfigError, match="backbone.position must be 'none'"):
        ImageClassifier.resolve_config({"backbone": {"position": "learned"}})
    with pytest.raises(ConfigError, match="Unknown config key augmentation.mixupp"):
        ImageClassifier.resolve_config({"augmentation": {"mixupp": True}})
    config = ImageClassifier.resolve_config(ImageClassifier.config_file())
    assert config.data.train == "digits" and config.backbone.position == "none"


def test_patch_count_and_position_interpolation(classifier):
    model = classifier.model
    assert model.get_layer("patch_tokens").output.shape[1:] == (16, 16)
    assert model.get_layer("class_token").output.shape[1:] == (17, 16)
    table = model.get_layer("patch_positions").embeddings.numpy()

    larger = classifier.with_image_size((12, 12))
    assert larger.model.get_layer("class_token").output.shape[1:] == (37, 16)
    positions = larger.model.get_layer("patch_positions")
    np.testing.assert_array_equal(positions.embeddings.numpy(), table)
    expected = tf.image.resize(table.reshape(1, 4, 4, 16), (6, 6), method="bilinear").numpy().reshape(36, 16)
    np.testing.assert_allclose(positions(np.zeros((1, 36, 16), np.float32), grid_shape=(6, 6))[0], expected, atol=1e-6)

    images = bars(2, seed=3).images
    same = classifier.with_image_size((8, 8)).model(images, training=False)
    np.testing.assert_allclose(same, model(images, training=False), atol=1e-5)
    assert larger.predict(images)["probabilities"].shape == (6, 3)


def test_augmentation_only_in_training(classifier):
    data = bars(8, seed=1)
    assert not any("random" in layer.name for layer in classifier.model.get_layer("preprocessing").layers)
    evaluation = np.concatenate([x for x, _ in classifier.dataset(data)])
    np.testing.assert_array_equal(evaluation, data.images)
    training = [(x.numpy(), y.numpy()) for x, y in classifier.dataset(data, training=True)]
    assert sum(len(x) for x, _ in training) == 16 and training[0][1].shape == (16, 3)
    shown = np.concatenate([x for x, _ in training])
    assert not any(np.allclose(image, original) for image in shown for original in data.images)
    assert classifier.one_hot and classifier.augmentation is not None
    plain = ImageClassifier.create(data, ImageClassifier.resolve_config(
        TINY, {"label_smoothing": 0.0, "augmentation.enabled": False}))
    assert not plain.one_hot and plain.augmentation is None
    assert np.concatenate([y for _, y in plain.dataset(data, training=True)]).shape == (16,)
    mixing = ImageClassifier.create(data, ImageClassifier.resolve_config(
        TINY, {"label_smoothing": 0.0, "augmentation.rand_augment": True, "augmentation.mixup": True}))
    assert mixing.one_hot
    images, labels = next(iter(mixing.dataset(data, training=True)))
    assert images.shape == (16, 8, 8, 1) and float(tf.reduce_min(tf.reduce_max(labels, -1))) < 1.0
    np.testing.assert_array_equal(np.concatenate([x for x, _ in mixing.dataset(data)]), data.images)


def test_tiny_model_learns_three_classes(classifier):
    metrics = classifier.evaluate(bars(8, seed=2))
    assert metrics["accuracy"] == 1.0 and metrics["top_k_accuracy"] == 1.0
    images = bars(1, seed=4).images
    result = classifier.predict(list(images[..., 0]))
    assert list(result["label"]) == list(CLASSES)
    np.testing.assert_allclose(result["probabilities"].sum(axis=1), 1.0, rtol=1e-5)
    assert result["top_k_label"].shape == (3, 3) and list(result["top_k_label"][:, 0]) == list(CLASSES)
    assert (np.diff(result["top_k_probabilities"], axis=1) <= 0).all()
    rgb_png = png(np.repeat(tf.image.resize(images[2], (24, 24)).numpy(), 3, axis=-1))
    assert classifier.predict(rgb_png)["label"][0] == "top"
    assert classifier.predict([])["probabilities"].shape == (0, 3)


def test_predict_bad_input_messages(classifier, tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    cases = [
        ([str(tmp_path / "missing.png")], FileNotFoundError, r"images\[0\]: .*missing\.png' is not a file"),
        ([png(np.zeros((8, 8, 1))), str(tmp_path / "notes.png")], ValueError,
         r"input `images`: these items are not complete PNG, JPEG, GIF or BMP images .* \[1\] \('.*notes\.png'\)"),
        ([png(np.zeros((8, 8, 1)))[:-20]], ValueError, r"not complete PNG, JPEG, GIF or BMP images .* \[0\]\.$"),
        (np.zeros((8, 8)), ValueError, r"one \(8, 8\) array; pass a batch"),
        (np.full((2, 8, 8), 300.0), ValueError, r"images\[0\] has values in \[300.0, 300.0\], outside value_range"),
        (np.zeros((1, 8, 8, 5)), ValueError, r"images\[0\] has 5 channels"),
        ([np.zeros((8, 8)), np.array(["a"])], TypeError, r"images\[1\] must be numeric"),
        (42, TypeError, "images must be an array, ImageData, file path, bytes or a list of them, got int"),
    ]
    for images, error, message in cases:
        with pytest.raises(error, match=message):
            classifier.predict(images)


def test_save_load_round_trip(classifier, tmp_path):
    images = bars(2, seed=5).images
    classifier.save(tmp_path / "task")
    loaded = suite.load(tmp_path / "task")
    assert isinstance(loaded, ImageClassifier) and loaded.config == classifier.config
    np.testing.assert_allclose(loaded.predict(images)["probabilities"], classifier.predict(images)["probabilities"],
                               atol=1e-6)


SERVE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    model = tf.saved_model.load(sys.argv[1])
    png = open(sys.argv[2], "rb").read()
    pixels = tf.io.decode_png(png)[None]
    out = {
        "bytes": model.signatures["serving_default"](image_bytes=tf.constant([png, png])),
        "float": model.signatures["predict_images"](images=tf.cast(pixels, tf.float32)),
        "uint8": model.signatures["predict_images_uint8"](images=pixels),
    }
    out = {name: {k: v.numpy().tolist() for k, v in result.items()} for name, result in out.items()}
    empty = model.signatures["serving_default"](image_bytes=tf.constant([], tf.string))
    out["empty"] = {k: v.shape.as_list() for k, v in empty.items()}
    extras = ("suite", "tensorflow_text", "keras_cv", "keras_hub")
    out["imported"] = [m for m in sys.modules if m.split(".")[0] in extras]
    print(json.dumps(out, default=lambda b: b.decode()))
    """
)


def test_export_serves_png_bytes_and_pixels_from_a_fresh_process(classifier, tmp_path):
    image = tf.image.resize(bars(1, seed=6).images[1], (20, 28)).numpy()
    path = tmp_path / "left.png"
    path.write_bytes(png(np.repeat(image, 3, axis=-1)))
    export = classifier.export(tmp_path / "exports", model_name="shapes")
    assert export == tmp_path / "exports" / "shapes" / "1"
    request = json.loads((export / "signature.json").read_text())["example_request"]["body"]["inputs"]
    assert tf.io.decode_png(base64.b64decode(request["image_bytes"][0]["b64"])).shape == (8, 8, 1)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", SERVE, str(export), str(path)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, check=True)
    served = json.loads(done.stdout.strip().splitlines()[-1])
    assert served["imported"] == []
    expected = classifier.predict(str(path))
    for name in ("bytes", "float", "uint8"):
        assert served[name]["label"][0] == expected["label"][0] == "left"
        assert served[name]["top_k_label"][0] == list(expected["top_k_label"][0])
        np.testing.assert_allclose(served[name]["probabilities"][0], expected["probabilities"][0], atol=1e-4)
    assert served["bytes"]["class_id"] == [1, 1]
    assert served["empty"] == {
        "label": [0], "class_id": [0], "probabilities": [0, 3],
        "top_k_class_id": [0, 3], "top_k_label": [0, 3], "top_k_probabilities": [0, 3],
    }


def test_cli_trains_on_a_folder_and_predicts_a_png(repo_root, tmp_path, capsys, monkeypatch):
    data = bars(8, seed=7)
    for i, (image, label) in enumerate(zip(data.images, data.labels)):
        path = tmp_path / "shapes" / CLASSES[label] / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png(image))
    monkeypatch.chdir(repo_root)
    code = main([
        "train", "image_classification", "--data.train", str(tmp_path / "shapes"), "--data.test_fraction", "0.25",
        "--data.validation_fraction", "0", "--backbone.num_layers", "1", "--backbone.d_model", "16",
        "--backbone.ff_dim", "32", "--augmentation.rand_augment", "false", "--training.epochs", "1",
        "--training.batch_size", "8", "--output-dir", str(tmp_path / "run"),
    ])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["saved_task"] == str(tmp_path / "run" / "task")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data_sizes"] == {"train": 18, "test": 6}
    assert set(metrics["test"]) == {"accuracy", "loss", "top_k_accuracy"}
    first = str(tmp_path / "shapes" / "top" / "20.png")
    assert main(["predict", str(tmp_path / "run" / "task"), first]) == 0
    predicted = json.loads(capsys.readouterr().out)[0]
    assert predicted["image"] == first and predicted["label"] in CLASSES and len(predicted["top_k"]) == 3
