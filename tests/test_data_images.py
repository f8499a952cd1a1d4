import gzip
import json
import os
import pathlib
import struct

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

from suite.vision.augmentation import augmentation
from suite.vision.data import ImageData, ImageDataConfig, read_idx, read_images, split_images, train_validation_split
from suite.vision.decoding import tf_decode_image
from suite.vision.preprocessor import ImagePreprocessor, preprocessing_layers

FASHION_MNIST = pathlib.Path(__file__).resolve().parents[2] / "shared" / "datasets" / "fashion-mnist"
FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"]


def _write_png(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_png(np.asarray(pixels, dtype=np.uint8)).numpy())


def _pattern(height, width, channels, value):
    rng = np.random.default_rng(value)
    return rng.integers(0, 256, size=(height, width, channels)).astype(np.uint8)


@pytest.fixture
def folder(tmp_path):
    """root/cat: 3 gray 6x6 PNGs, root/dog: 2 gray 6x6 PNGs, plus an ignored text file."""
    root = tmp_path / "pets"
    for i in range(3):
        _write_png(root / "cat" / f"c{i}.png", _pattern(6, 6, 1, i))
    for i in range(2):
        _write_png(root / "dog" / f"d{i}.PNG", _pattern(6, 6, 1, 10 + i))
    (root / "dog" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def digits():
    return read_images()


def test_folder_reads_classes_in_sorted_order_with_exact_pixels(folder):
    data = read_images(folder)
    assert data.class_names == ("cat", "dog")
    assert data.images.shape == (5, 6, 6, 1) and data.images.dtype == np.float32
    np.testing.assert_array_equal(data.labels, [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(data.images[3], _pattern(6, 6, 1, 10).astype(np.float32))


def test_folder_corrupt_files_are_named(folder):
    (folder / "cat" / "broken.png").write_bytes(b"\x89PNG not really")
    good = tf.io.encode_png(_pattern(6, 6, 1, 0)).numpy()
    (folder / "dog" / "truncated.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="could not read 2 image file") as info:
        read_images(folder)
    assert "broken.png" in str(info.value) and "truncated.png" in str(info.value)
    assert "{{" not in str(info.value)


def test_folder_missing_or_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        read_images(tmp_path / "nowhere")
    (tmp_path / "a").mkdir()
    with pytest.raises(ValueError, match=r"class folder '.*/a' has no"):
        read_images(tmp_path)


def test_channel_mix_is_an_error_naming_files_unless_channels_given(folder):
    rgba = _pattern(6, 6, 4, 99)
    _write_png(folder / "dog" / "rgba.png", rgba)
    with pytest.raises(ValueError, match=r"5 with 1 channel.*1 with 4 channel.*rgba\.png.*channels=1 or channels=3"):
        read_images(folder)
    gray = read_images(folder, channels=1)
    assert gray.images.shape == (6, 6, 6, 1)
    rgb_part = rgba[..., :3].astype(np.float32)
    expected = (rgb_part * np.array([0.2989, 0.5870, 0.1140], np.float32)).sum(-1)
    np.testing.assert_allclose(gray.images[-1, ..., 0], expected, rtol=1e-5, atol=1e-3)
    color = read_images(folder, channels=3)
    assert color.images.shape == (6, 6, 6, 3)
    np.testing.assert_array_equal(color.images[-1], rgb_part)
    np.testing.assert_array_equal(color.images[0, ..., 0], color.images[0, ..., 2])


def test_all_rgba_needs_an_explicit_channel_count(tmp_path):
    for name in ("a", "b"):
        _write_png(tmp_path / name / "x.png", _pattern(4, 4, 4, 1))
    with pytest.raises(ValueError, match="2 with 4 channel"):
        read_images(tmp_path)
    assert read_images(tmp_path, channels=3).channels == 3


def test_mixed_sizes_need_image_size(tmp_path):
    _write_png(tmp_path / "a" / "small.png", _pattern(4, 4, 3, 1))
    _write_png(tmp_path / "b" / "large.png", _pattern(8, 6, 3, 2))
    with pytest.raises(ValueError, match=r"small\.png is \(4, 4\).*large\.png is \(8, 6\).*image_size"):
        read_images(tmp_path)
    assert read_images(tmp_path, image_size=(5, 5)).images.shape == (2, 5, 5, 3)


def test_arrays_with_string_labels_and_value_range():
    images = np.linspace(0.0, 1.0, 4 * 3 * 3).reshape(4, 3, 3)
    data = read_images(images, ["b", "a", "b", "a"], value_range=(0, 1))
    assert data.class_names == ("a", "b")
    np.testing.assert_array_equal(data.labels, [1, 0, 1, 0])
    assert data.images.shape == (4, 3, 3, 1)
    assert data.images.max() == pytest.approx(255.0) and data.images.min() == 0.0


@pytest.mark.parametrize(
    "images, labels, error, message",
    [
        (np.zeros((3, 4)), [0, 1, 0], ValueError, r"shape \(n, H, W\) or \(n, H, W, C\), got \(3, 4\)"),
        (np.zeros((2, 4, 4, 5)), [0, 1], ValueError, r"images\[0\] has 5 channels"),
        (np.zeros((2, 4, 4, 4)), [0, 1], ValueError, r"2 with 4 channel.*images\[0\]"),
        ([np.zeros((4, 4)), np.zeros((4,))], [0, 1], ValueError, r"images\[1\] has shape \(4,\)"),
        (np.full((2, 2, 2), "a"), [0, 1], TypeError, r"images must be numeric.*<U1"),
        ([np.zeros((2, 2)), np.full((2, 2), True)], [0, 1], TypeError, r"images\[1\] must be numeric.*bool"),
        (np.full((2, 2, 2), 300.0), [0, 1], ValueError, r"images\[0\] has values in \[300.0, 300.0\], outside"),
        (np.stack([np.zeros((2, 2)), np.full((2, 2), np.nan)]), [0, 1], ValueError, r"images\[1\] has NaN"),
        (np.zeros((3, 2, 2)), [0, 1], ValueError, "labels has 2 entries but there are 3 images"),
        (np.zeros((2, 2, 2)), [0, -1], ValueError, r"labels\[1\] = -1"),
        (np.zeros((2, 2, 2)), [0.0, 1.0], TypeError, "labels must be integer class ids or class-name strings"),
        (np.zeros((2, 2, 2)), None, ValueError, "labels is required"),
        (42, [0], TypeError, "source must be 'digits', a directory, an IDX or .npz file, an image array or ImageData"),
    ],
)
def test_array_errors_name_the_index(images, labels, error, message):
    with pytest.raises(error, match=message):
        read_images(images, labels)


def test_label_outside_given_class_names():
    with pytest.raises(ValueError, match=r"labels\[1\] = 'c' is not one of class_names"):
        read_images(np.zeros((2, 2, 2)), ["a", "c"], class_names=["a", "b"])
    with pytest.raises(ValueError, match=r"labels\[0\] = 2 is not a class id in \[0, 2\)"):
        read_images(np.zeros((2, 2, 2)), [2, 0], class_names=["a", "b"])


def test_sources_that_hold_labels_reject_labels_and_class_names(folder):
    with pytest.raises(ValueError, match=r"labels must be None when source is '.*pets': it holds its own labels"):
        read_images(folder, [0, 0, 0, 1, 1])
    with pytest.raises(ValueError, match="class_names is for IDX, .npz and array data; source 'digits' names its"):
        read_images("digits", class_names=list("0123456789"))


def _idx_bytes(array, code=0x08) -> bytes:
    array = np.asarray(array, np.uint8)
    return bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _write(path, data: bytes):
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def _write_idx(root, images, labels, suffix="", prefix="train"):
    """root/<prefix>-images-idx3-ubyte<suffix> and the labels file beside it; returns the images path."""
    _write(root / f"{prefix}-labels-idx1-ubyte{suffix}", _idx_bytes(labels))
    return _write(root / f"{prefix}-images-idx3-ubyte{suffix}", _idx_bytes(images))


@pytest.fixture
def idx_arrays():
    """6 random uint8 5x4 images and their labels."""
    images = np.random.default_rng(7).integers(0, 256, (6, 5, 4), dtype=np.uint8)
    return images, np.array([0, 1, 2, 0, 1, 9], np.uint8)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip_gzipped_or_plain(tmp_path, idx_arrays, suffix):
    images, labels = idx_arrays
    path = _write_idx(tmp_path, images, labels, suffix)
    raw_images, raw_labels = read_idx(path)
    assert raw_images.dtype == np.uint8 and raw_images.shape == (6, 5, 4, 1)
    np.testing.assert_array_equal(raw_images[..., 0], images)
    np.testing.assert_array_equal(raw_labels, labels)
    data = read_images(str(path))
    assert data.class_names == tuple("0123456789") and data.images.shape == (6, 5, 4, 1)
    np.testing.assert_array_equal(data.images[..., 0], images.astype(np.float32))
    np.testing.assert_array_equal(data.labels, labels)


def test_idx_class_names(tmp_path, idx_arrays):
    images, labels = idx_arrays
    path = _write_idx(tmp_path, images, labels)
    names = [f"c{i}" for i in range(10)]
    assert read_images(path, class_names=names).class_names == tuple(names)
    with pytest.raises(ValueError, match=r"images-idx3-ubyte': labels\[5\] = 9 is not a class id in \[0, 3\)"):
        read_images(path, class_names=["a", "b", "c"])
    high = _write_idx(tmp_path, images, labels + 3, prefix="high")
    assert read_images(high).class_names == tuple(str(i) for i in range(13))


@pytest.mark.parametrize(
    "contents, message",
    [
        (b"\x08\x03\x00\x00" + bytes(12), r"is not an IDX file: it must start with 0x00 0x00 .*got 08 03 00 00"),
        (_idx_bytes(np.zeros((2, 2, 2)), code=0x0D), r"has IDX dtype code 0x0d; only 0x08 \(unsigned byte\)"),
        (_idx_bytes(np.zeros((2, 4))), r"has 2 dimension\(s\); expected 3: \(n, H, W\) images"),
        (b"\x00\x00\x08\x03\x00", "is truncated: its header needs 16 bytes, the file has 5"),
        (_idx_bytes(np.zeros((2, 2, 2)))[:-1], r"holds 7 values after its header; its shape \(2, 2, 2\) needs 8"),
    ],
    ids=["magic", "dtype_code", "ndim", "short_header", "short_data"],
)
def test_idx_bad_headers_are_errors_naming_the_file(tmp_path, contents, message):
    _write(tmp_path / "train-labels-idx1-ubyte.gz", _idx_bytes(np.zeros(2)))
    path = _write(tmp_path / "train-images-idx3-ubyte.gz", contents)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz' " + message):
        read_idx(path)


def test_idx_counts_must_agree_and_labels_file_must_exist(tmp_path, idx_arrays):
    images, labels = idx_arrays
    path = _write_idx(tmp_path, images, labels[:4], ".gz")
    with pytest.raises(ValueError, match=r"has 6 images but '.*train-labels-idx1-ubyte\.gz' has 4 labels"):
        read_images(path)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"labels file '.*train-labels-idx1-ubyte\.gz' for the IDX images"):
        read_images(path)
    with pytest.raises(ValueError, match=r"must be the images file \(named \.\.\.-images-idx3-ubyte\[\.gz\]\)"):
        read_images(tmp_path / "t10k-labels-idx1-ubyte")


def test_idx_test_file_replaces_the_held_out_test_split(tmp_path):
    train = _write_idx(tmp_path, np.zeros((20, 2, 2)), np.arange(20) % 2)
    test = _write_idx(tmp_path, np.ones((4, 2, 2)), np.arange(4) % 2, prefix="t10k")
    config = ImageDataConfig(train=str(train), test=str(test), validation_fraction=0.2)
    parts = split_images(read_images(config.train), config)
    assert "test" not in parts and len(parts["validation"]) == 4 and len(parts["train"]) == 16
    assert len(read_images(config.test)) == 4


def test_npz_and_tuple_sources(tmp_path):
    rng = np.random.default_rng(3)
    gray = rng.integers(0, 256, (4, 3, 5), dtype=np.uint8)
    np.savez(tmp_path / "gray.npz", images=gray, labels=np.array([1, 0, 1, 2]))
    data = read_images(tmp_path / "gray.npz", class_names=["a", "b", "c"])
    assert data.class_names == ("a", "b", "c") and data.images.shape == (4, 3, 5, 1)
    np.testing.assert_array_equal(data.images[..., 0], gray)
    color, labels = rng.uniform(0, 255, (4, 3, 5, 3)).astype(np.float32), np.array([0, 1, 1, 0])
    np.savez_compressed(tmp_path / "color.npz", images=color, labels=labels)
    data = read_images(str(tmp_path / "color.npz"))
    assert data.class_names == ("0", "1") and data.images.shape == (4, 3, 5, 3)
    np.testing.assert_array_equal(data.images, color)
    np.testing.assert_array_equal(read_images((color, labels)).images, color)


@pytest.mark.parametrize(
    "arrays, class_names, error, message",
    [
        ({"pixels": np.zeros((2, 2, 2)), "labels": [0, 1]}, None, ValueError,
         r" must hold arrays 'images' .* it lacks \['images'\] \(it has \['labels', 'pixels'\]\)"),
        ({"images": np.zeros((2, 2, 2))}, None, ValueError, r" must hold .* it lacks \['labels'\]"),
        ({"images": np.zeros((2, 4)), "labels": [0, 1]}, None, ValueError,
         r": images must have shape \(n, H, W\) or \(n, H, W, C\), got \(2, 4\)"),
        ({"images": np.full((2, 2, 2), 256.0), "labels": [0, 1]}, None, ValueError,
         r": images\[0\] has values in \[256.0, 256.0\], outside value_range"),
        ({"images": np.zeros((2, 2, 2)), "labels": [[0, 1]]}, None, ValueError, ": labels must be 1-D"),
        ({"images": np.zeros((3, 2, 2)), "labels": [0, 1]}, None, ValueError, ": labels has 2 entries but there are 3"),
        ({"images": np.zeros((2, 2, 2)), "labels": [0, -1]}, None, ValueError, r": labels\[1\] = -1 is not a class id"),
        ({"images": np.zeros((2, 2, 2)), "labels": [0, 3]}, ["a", "b"], ValueError,
         r": labels\[1\] = 3 is not a class id in \[0, 2\)"),
        ({"images": np.zeros((2, 2, 2)), "labels": [0.0, 1.0]}, None, TypeError, ": labels must be integer class ids"),
        ({"images": np.zeros((2, 2, 2, 5)), "labels": [0, 1]}, None, ValueError, r": images\[0\] has 5 channels"),
    ],
)
def test_npz_errors_name_the_file_and_array(tmp_path, arrays, class_names, error, message):
    np.savez(tmp_path / "data.npz", **arrays)
    with pytest.raises(error, match=r"data\.npz'" + message):
        read_images(tmp_path / "data.npz", class_names=class_names)



@pytest.mark.skipif(not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file(),
                    reason="../shared/datasets/fashion-mnist is missing")
def test_reads_fashion_mnist_train_and_t10k():
    for split, count in (("train", 60_000), ("t10k", 10_000)):
        data = read_images(FASHION_MNIST / f"{split}-images-idx3-ubyte.gz", class_names=FASHION_NAMES)
        assert data.images.shape == (count, 28, 28, 1) and data.class_names == tuple(FASHION_NAMES)
        np.testing.assert_array_equal(np.bincount(data.labels, minlength=10), [count // 10] * 10)
        assert data.images.min() == 0.0 and data.images.max() == 255.0

def test_digits_default_rescaled_to_pixel_range(digits):
    assert digits.images.shape == (1797, 8, 8, 1)
    assert digits.class_names == tuple(str(i) for i in range(10))
    assert digits.images.min() == 0.0 and digits.images.max() == 255.0
    np.testing.assert_array_equal(digits.images, np.round(digits.images))
    assert read_images("digits", channels=3, image_size=(16, 16)).images.shape == (1797, 16, 16, 3)


def test_split_is_stratified_and_deterministic(digits):
    train, val = train_validation_split(digits, validation_fraction=0.2, seed=3)
    again_train, again_val = train_validation_split(digits, validation_fraction=0.2, seed=3)
    _, other_val = train_validation_split(digits, validation_fraction=0.2, seed=4)
    np.testing.assert_array_equal(val.images, again_val.images)
    np.testing.assert_array_equal(train.labels, again_train.labels)
    assert not np.array_equal(val.images, other_val.images)
    assert len(train) + len(val) == len(digits) and len(val) == 360
    shares = np.bincount(val.labels) / np.bincount(digits.labels)
    assert shares.min() > 0.18 and shares.max() < 0.22


def test_split_needs_two_images_per_class():
    data = read_images(np.zeros((5, 2, 2)), ["a", "a", "b", "b", "c"])
    with pytest.raises(ValueError, match=r"classes \['c'\] have 1"):
        train_validation_split(data, 0.4)


def test_preprocessor_config_round_trip_and_label_alignment(folder):
    data = read_images(folder)
    pre = ImagePreprocessor.fit(data, image_size=(12, 12))
    config = json.loads(json.dumps(pre.get_config()))
    assert config == {"class_names": ["cat", "dog"], "image_size": [12, 12], "channels": 1,
                      "scale": 1 / 255, "offset": 0.0}
    restored = ImagePreprocessor.from_config(config)
    assert restored.get_config() == pre.get_config()
    reordered = ImageData(data.images, 1 - data.labels, ("dog", "cat"))
    np.testing.assert_array_equal(restored.label_ids(reordered), data.labels)
    stranger = ImageData(data.images, data.labels, ("cat", "bird"))
    with pytest.raises(ValueError, match=r"\['bird'\] are not among the fitted class_names"):
        restored.label_ids(stranger)
    with pytest.raises(ValueError, match="images have 3 channel.*expects 1.*channels=1"):
        pre.dataset(read_images(folder, channels=3))


def test_dataset_shapes_and_training_batches(digits):
    pre = ImagePreprocessor.fit(digits)
    subset = digits.subset(np.arange(70))
    ds = pre.dataset(subset, batch_size=32, shuffle=True, training=True, seed=1)
    images_spec, labels_spec = ds.element_spec
    assert images_spec.shape == (32, 8, 8, 1) and images_spec.dtype == tf.float32
    assert labels_spec.shape == (32,) and labels_spec.dtype == tf.int32
    assert len(list(ds)) == 2
    eval_batches = [labels for _, labels in pre.dataset(subset, batch_size=32)]
    assert [len(b) for b in eval_batches] == [32, 32, 6]
    np.testing.assert_array_equal(np.concatenate(eval_batches), subset.labels)


def test_augmentation_only_in_training(digits):
    pre = ImagePreprocessor.fit(digits)
    subset = digits.subset(np.arange(64))
    aug = augmentation(pre, magnitude=0.3, seed=5)
    validation = pre.dataset(subset, batch_size=16, augmentation=aug)
    first, second = (np.concatenate([x for x, _ in validation]) for _ in range(2))
    np.testing.assert_array_equal(first, subset.images)
    np.testing.assert_array_equal(second, subset.images)
    train = pre.dataset(subset, batch_size=16, training=True, augmentation=aug)
    epoch_one, epoch_two = (np.concatenate([x for x, _ in train]) for _ in range(2))
    assert epoch_one.shape == subset.images.shape
    assert not np.allclose(epoch_one, subset.images) and not np.allclose(epoch_one, epoch_two)
    assert epoch_one.min() >= 0.0 and epoch_one.max() <= 255.0


def test_mixup_cutmix_make_labels_one_hot(digits):
    pre = ImagePreprocessor.fit(digits)
    subset = digits.subset(np.arange(32))
    aug = augmentation(pre, rand_augment=False, mixup=True, cutmix=True, seed=2)
    assert aug.soft_labels and type(aug).from_config(aug.get_config()).get_config() == aug.get_config()
    images, labels = next(iter(pre.dataset(subset, batch_size=32, training=True, augmentation=aug)))
    assert images.shape == (32, 8, 8, 1) and labels.shape == (32, 10) and labels.dtype == tf.float32
    np.testing.assert_allclose(tf.reduce_sum(labels, -1), 1.0, rtol=1e-5)
    assert float(tf.reduce_min(tf.reduce_max(labels, -1))) < 1.0
    _, val_labels = next(iter(pre.dataset(subset, batch_size=32, augmentation=aug)))
    np.testing.assert_array_equal(val_labels, tf.one_hot(subset.labels, 10))
    with pytest.raises(ValueError, match="need one_hot labels"):
        pre.dataset(subset, batch_size=8, augmentation=aug, one_hot=False)


def test_rgb_augmentation_runs_rand_augment():
    data = read_images(np.random.default_rng(0).integers(0, 256, (8, 6, 6, 3)), [0, 1] * 4)
    pre = ImagePreprocessor.fit(data)
    images, labels = next(iter(pre.dataset(data, batch_size=8, training=True, augmentation=augmentation(pre))))
    assert images.shape == (8, 6, 6, 3) and labels.shape == (8,)


def test_preprocessing_layers_resize_and_rescale():
    pre = ImagePreprocessor(["a", "b"], (4, 4), 1)
    stem = preprocessing_layers(pre)
    pixels = np.full((2, 8, 8, 1), 255.0, np.float32)
    out = np.asarray(stem(pixels))
    assert out.shape == (2, 4, 4, 1)
    np.testing.assert_allclose(out, 1.0, rtol=1e-6)


@pytest.mark.parametrize("encode", [tf.io.encode_png, tf.io.encode_jpeg])
def test_tf_decode_image_png_and_jpeg(encode):
    pixels = np.zeros((16, 24, 3), np.uint8)
    pixels[:8] = 200
    decoded = tf_decode_image(encode(pixels), channels=1, size=(4, 6))
    assert decoded.shape == (4, 6, 1) and decoded.dtype == tf.float32
    expected = np.zeros((4, 6, 1), np.float32)
    expected[:2] = 200 * (0.2989 + 0.5870 + 0.1140)
    np.testing.assert_allclose(decoded.numpy(), expected, atol=2.0)


def test_decode_matches_folder_reading_and_preprocessor_batch(folder, digits):
    encoded = (folder / "cat" / "c0.png").read_bytes()
    data = read_images(folder)
    graph_decode = tf.function(lambda b: tf_decode_image(b, 1, (6, 6)))
    np.testing.assert_array_equal(graph_decode(tf.constant(encoded)).numpy(), data.images[0])
    pre = ImagePreprocessor.fit(digits)
    pngs = tf.stack([tf.io.encode_png(tf.cast(image, tf.uint8)) for image in digits.images[:3]])
    np.testing.assert_array_equal(pre.tf_decode(pngs).numpy(), digits.images[:3])
