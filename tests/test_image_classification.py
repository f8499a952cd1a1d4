"""ImageClassifier: ViT stem shapes, position interpolation, augmentation, learning, save/load, export, CLI;
the Compact Transformer options (conv stem, overlapping patches, mean and sequence pooling, drop path)."""

import base64
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import suite
from suite.cli import main
from suite.config import ConfigError
from suite.layers import AttentionPooling
from suite.vision.augmentation import ImageAugmentation
from suite.vision.data import ImageData, read_images
from suite.vision.model import StridedMaxPooling2D, build_vit
from suite.vision.preprocessor import ImagePreprocessor
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


CCT = {
    **TINY,
    "stem": "conv",
    "pooling": "sequence",
    "backbone": {**TINY["backbone"], "num_layers": 2, "drop_path": 0.1},
    "data": {"validation_fraction": 0.0, "test_fraction": 0.0},
    "training": {**TINY["training"], "epochs": 1, "batch_size": 32},
}


@pytest.fixture(scope="module")
def compact() -> ImageClassifier:
    """A Compact Transformer (conv tokens, sequence pooling, drop path) after 3 steps on 96 digits."""
    return ImageClassifier.train(read_images("digits").subset(np.arange(96)), CCT, verbose=0)


def test_config_errors_name_the_key(repo_root):
    with pytest.raises(ConfigError, match=r"image_size \(6, 6\) must be a multiple of patch_size \(4\)"):
        ImageClassifier.resolve_config({"image_size": [6, 6], "patch_size": 4})
    with pytest.raises(ConfigError, match="backbone.position must be 'none'"):
        ImageClassifier.resolve_config({"backbone": {"position": "learned"}})
    with pytest.raises(ConfigError, match="Unknown config key augmentation.mixupp"):
        ImageClassifier.resolve_config({"augmentation": {"mixupp": True}})
    config = ImageClassifier.resolve_config(ImageClassifier.config_file())
    assert config.data.train == "digits" and config.backbone.position == "none"
    assert (config.stem, config.pooling, config.patch_stride, config.backbone.drop_path) == ("patch", "cls", None, 0.0)
    cases = [
        ({"stem": "convolution"}, r"stem must be one of \('patch', 'conv'\), got 'convolution'"),
        ({"pooling": "max"}, r"pooling must be one of \('cls', 'mean', 'sequence'\), got 'max'"),
        ({"patch_size": 2, "patch_stride": 3}, r"patch_stride must be in 1..patch_size \(2\) or null, got 3"),
        ({"image_size": [8, 8], "patch_size": 4, "patch_stride": 3},
         r"image_size \(8, 8\) must be patch_size \(4\) plus a multiple of patch_stride \(3\)"),
        ({"stem": "conv", "conv_layers": 0}, "conv_layers must be >= 1, got 0"),
        ({"stem": "conv", "kernel_size": 0}, "kernel_size must be >= 1, got 0"),
        ({"backbone": {"drop_path": 1.0}}, r"backbone: BackboneConfig.drop_path must be in \[0, 1\)"),
    ]
    for values, message in cases:
        with pytest.raises(ConfigError, match=message):
            ImageClassifier.resolve_config(values)
    assert ImageClassifier.resolve_config({"image_size": [7, 9], "patch_size": 4, "stem": "conv"}).image_size == (7, 9)


def test_configs_by_name_and_the_small_regime():
    assert ImageClassifier.config_names() == ["image_classification", "image_classification_small"]
    small = ImageClassifier.resolve_config("image_classification_small", {"epochs": 2})
    assert (small.stem, small.pooling, small.backbone.d_model, small.training.epochs) == ("conv", "sequence", 128, 2)
    assert not small.augmentation.horizontal_flip  # digits stay valid
    preprocessor = ImagePreprocessor(CLASSES, (28, 28), 1)
    model = ImageClassifier.build_model(preprocessor, small)
    assert model.get_layer("patch_tokens").output.shape[1:] == (16, 128)  # 28 -> 14 -> 7 -> 4
    with pytest.raises(ConfigError, match="ships no config of that name .it ships: image_classification, "
                                          "image_classification_small"):
        ImageClassifier.resolve_config("image_classification_large")


@pytest.mark.parametrize("image_size, tokens", [((8, 8), 4), ((28, 28), 49), ((28, 20), 35)])
def test_conv_stem_token_grid(image_size, tokens):
    """Two conv layers, each halving the sides (rounding up): 8x8 -> 2x2, 28x28 -> 7x7, 28x20 -> 7x5."""
    preprocessor = ImagePreprocessor(CLASSES, image_size, 1)
    model = build_vit(preprocessor, 2, ImageClassifier.resolve_config(TINY).backbone, stem="conv", pooling="sequence")
    assert model.get_layer("patch_tokens").output.shape[1:] == (tokens, 16)
    assert model.get_layer("stem_conv_0").filters == 8 and model.get_layer("stem_conv_1").filters == 16
    assert isinstance(model.get_layer("pooling"), AttentionPooling)
    assert "class_token" not in [layer.name for layer in model.layers]
    assert model(np.zeros((2, 5, 6, 1), np.float32)).shape == (2, 3)


@pytest.mark.parametrize(
    "shape, pool_size, strides",
    [((2, 28, 28, 3), 3, 2), ((2, 7, 5, 2), 3, 2), ((2, 8, 6, 1), 2, 2), ((1, 5, 5, 1), 4, 3)],
)
def test_strided_max_pooling_matches_keras_max_pooling_and_its_gradient(shape, pool_size, strides):
    images = tf.constant(np.random.default_rng(0).normal(size=shape).astype(np.float32))
    ours, reference = StridedMaxPooling2D(pool_size, strides), keras.layers.MaxPooling2D(pool_size, strides, "same")
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(images)
        pooled, expected = ours(images, training=True), reference(images)
        loss, expected_loss = tf.reduce_sum(pooled * pooled), tf.reduce_sum(expected * expected)
    np.testing.assert_array_equal(pooled.numpy(), expected.numpy())
    assert tuple(ours.compute_output_shape(shape)) == tuple(pooled.shape)
    np.testing.assert_array_equal(ours(images).numpy(), expected.numpy())
    np.testing.assert_array_equal(tape.gradient(loss, images).numpy(), tape.gradient(expected_loss, images).numpy())
    assert StridedMaxPooling2D.from_config(ours.get_config()).get_config() == ours.get_config()
    with pytest.raises(ValueError, match="needs a static height and width"):
        ours.compute_output_shape((None, None, shape[2], shape[3]))


def test_overlapping_patches_and_mean_pooling():
    preprocessor = ImagePreprocessor(CLASSES, (8, 8), 1)
    backbone = ImageClassifier.resolve_config(TINY).backbone
    overlapping = build_vit(preprocessor, 4, backbone, patch_stride=2)
    assert overlapping.get_layer("class_token").output.shape[1:] == (10, 16)
    mean = build_vit(preprocessor, 2, backbone, pooling="mean")
    assert mean.get_layer("pooling").mode == "mean" and "class_token" not in [layer.name for layer in mean.layers]
    assert mean(np.zeros((1, 8, 8, 1), np.float32)).shape == (1, 3)


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


def test_random_erasing_fills_one_rectangle_per_image():
    images = np.full((8, 28, 28, 1), 128.0, np.float32)
    labels = np.zeros(8, np.int32)
    erase = ImageAugmentation(1, 3, translation=0.0, rotation=0.0, zoom=0.0, rand_augment=False, random_erasing=1.0)
    erased, same_labels = erase(tf.constant(images), tf.constant(labels))
    changed = (erased.numpy() != 128.0)[..., 0]
    assert (same_labels.numpy() == labels).all() and erased.shape == images.shape
    assert changed.any(axis=(1, 2)).all() and (changed.mean(axis=(1, 2)) < 0.5).all()
    rows, cols = changed.any(axis=2), changed.any(axis=1)
    assert (changed.sum(axis=(1, 2)) == rows.sum(1) * cols.sum(1)).all()  # one filled box
    assert 0.0 <= float(tf.reduce_min(erased)) and float(tf.reduce_max(erased)) <= 255.0
    with pytest.raises(ValueError, match=r"random_erasing must be in \[0, 1\], got 1.5"):
        ImageAugmentation(1, 3, random_erasing=1.5)


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


def test_weight_averaging_trains_the_raw_weights_and_keeps_the_average():
    """`training.ema_momentum`: the raw weights train as without it (Adam's moments, which only see
    their gradients, agree), validation and the kept best epoch use the averaged weights. Without
    augmentation, whose random draws differ between runs in one process."""
    options = {**TINY, "augmentation": {"enabled": False}, "training": {**TINY["training"], "epochs": 3}}
    averaging = {**options, "training": {**options["training"], "ema_momentum": 0.8}}
    validation = bars(6, seed=3)
    plain = ImageClassifier.train(bars(), options, validation_data=validation, verbose=0)
    averaged = ImageClassifier.train(bars(), averaging, validation_data=validation, verbose=0)

    def moments(task):
        return [v.numpy() for v in task.model.optimizer.variables if v.path.endswith(("_momentum", "_velocity"))]

    assert len(moments(plain)) == len(plain.model.trainable_variables) * 2
    for a, b in zip(moments(plain), moments(averaged)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
    metrics = averaged.training_metrics
    best_validation_loss = metrics["history"]["val_loss"][metrics["best_epoch"] - 1]
    assert metrics["validation"]["loss"] == pytest.approx(best_validation_loss, rel=1e-5)
    assert min(metrics["history"]["val_loss"]) == best_validation_loss
    assert not np.allclose(plain.model.get_weights()[0], averaged.model.get_weights()[0])
    with pytest.raises(ConfigError, match=r"ema_momentum must be in \(0, 1\)"):
        ImageClassifier.resolve_config({"training": {"ema_momentum": 1.0}})


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


def test_compact_transformer_trains_saves_loads_and_exports(compact, tmp_path):
    """Conv tokens (2x2 on 8x8 digits, 7x7 at 28x28), no class token, drop path rising over the two
    blocks; the saved task, and the SavedModel loaded in this process, give the same probabilities."""
    model = compact.model
    assert model.get_layer("patch_tokens").output.shape[1:] == (4, 16)
    assert [block.drop_path for block in model.get_layer("backbone").blocks] == [0.0, 0.1]
    history = compact.training_metrics["history"]
    assert compact.training_metrics["epochs_run"] == 1 and np.isfinite(history["loss"]).all()
    images = read_images("digits").subset(np.arange(96, 104)).images
    expected = compact.predict(images)["probabilities"]
    assert expected.shape == (8, 10)
    larger = compact.with_image_size((28, 28))
    assert larger.model.get_layer("patch_tokens").output.shape[1:] == (49, 16)
    assert larger.model(images, training=False).shape == (8, 10)
    compact.save(tmp_path / "task")
    loaded = suite.load(tmp_path / "task")
    assert loaded.config == compact.config and (loaded.config.stem, loaded.config.pooling) == ("conv", "sequence")
    np.testing.assert_allclose(loaded.model(images, training=False), model(images, training=False), atol=1e-5)
    served = tf.saved_model.load(str(compact.export(tmp_path / "exports")))
    np.testing.assert_allclose(served.signatures["predict_images"](images=tf.constant(images))["probabilities"],
                               expected, atol=1e-5)


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
