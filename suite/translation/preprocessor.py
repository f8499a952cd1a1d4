"""Translation preprocessing: `TranslationPreprocessor` learns WordPiece vocabularies from training text,
tokenizes and detokenizes with TensorFlow Text ops (the same code runs in tf.data and in an exported
SavedModel) and builds teacher-forced batches bucketed into a few static shapes."""

from __future__ import annotations

import logging
import math

import pandas as pd
import tensorflow as tf
import tensorflow_text as tf_text

from suite.translation.data import SIDES, read_parallel

logger = logging.getLogger(__name__)

RESERVED_TOKENS = ("[PAD]", "[UNK]", "[START]", "[END]")
PAD_ID, UNK_ID, START_ID, END_ID = 0, 1, 2, 3

_WHITESPACE = r"\s|\p{Cc}|\p{Cf}"
_PUNCTUATION = r"[!-/]|[:-@]|[\[-`]|[{-~]|\p{P}"
_ALNUM = r"[\p{L}\p{N}]"
_DETOKENIZE_RULES = (
    (r"\s+([.,!?;:%)\]}])", r"\1"),
    (r"([(\[{])\s+", r"\1"),
    (rf"({_ALNUM}) ([-'’/]) ({_ALNUM})", r"\1\2\3"),
    (rf"({_ALNUM}) ([-'’/]) ({_ALNUM})", r"\1\2\3"),
)


def teacher_forcing(source_ids: tf.Tensor, target_ids: tf.Tensor) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
    """One pair of id vectors -> model inputs and labels.

    Returns `({"encoder_token_ids": source, "decoder_token_ids": [START] + target}, target + [END])`.
    """
    start = tf.constant([START_ID], target_ids.dtype)
    end = tf.constant([END_ID], target_ids.dtype)
    inputs = {"encoder_token_ids": source_ids, "decoder_token_ids": tf.concat([start, target_ids], axis=0)}
    return inputs, tf.concat([target_ids, end], axis=0)


class TranslationPreprocessor(tf.Module):
    """WordPiece vocabularies, in-graph tokenization and length-bucketed teacher-forced batches.

    `max_source_length` bounds the encoder tokens of a pair; `max_target_length` bounds the
    decoder positions, i.e. the target's word pieces plus one (`[START]` or `[END]`). Batches are
    padded to one of `bucket_shapes` (encoder length, decoder length). `target_vocabulary=None`
    shares the source vocabulary. `lower_case` case-folds and keeps accents (`Männer` -> `männer`).
    A `tf.Module`: attach it to the exported module so its tokenizers travel with the SavedModel.
    """

    def __init__(
        self,
        source_vocabulary: list[str],
        target_vocabulary: list[str] | None = None,
        *,
        lower_case: bool = False,
        max_source_length: int = 64,
        max_target_length: int = 64,
        num_buckets: int = 4,
    ):
        super().__init__(name="translation_preprocessor")
        _check_sizes(max_source_length=max_source_length, max_target_length=max_target_length, num_buckets=num_buckets)
        self.source_vocabulary = _check_vocabulary(source_vocabulary, "source_vocabulary")
        self.shared_vocabulary = target_vocabulary is None
        self.target_vocabulary = self.source_vocabulary
        if not self.shared_vocabulary:
            self.target_vocabulary = _check_vocabulary(target_vocabulary, "target_vocabulary")
        self.lower_case = bool(lower_case)
        self.max_source_length, self.max_target_length = max_source_length, max_target_length
        self.num_buckets = num_buckets
        source_tokenizer = _wordpiece(self.source_vocabulary)
        target_tokenizer = source_tokenizer if self.shared_vocabulary else _wordpiece(self.target_vocabulary)
        self._tokenizers = {"source": source_tokenizer, "target": target_tokenizer}

    @classmethod
    def fit(
        cls,
        frame: pd.DataFrame,
        *,
        vocabulary_size: int = 8000,
        shared_vocabulary: bool = False,
        lower_case: bool = False,
        max_source_length: int = 64,
        max_target_length: int = 64,
        num_buckets: int = 4,
    ) -> TranslationPreprocessor:
        """Learns WordPiece vocabularies of at most `vocabulary_size` tokens from training pairs.

        Words seen fewer than 10 times only contribute characters (keras-hub's learner), so a small
        corpus gives fewer tokens than asked for.
        """
        from keras_hub.tokenizers import compute_word_piece_vocabulary

        frame = read_parallel(frame)
        if frame.empty:
            raise ValueError("TranslationPreprocessor.fit: the training frame has no non-empty pairs.")
        _check_sizes(vocabulary_size=vocabulary_size, max_source_length=max_source_length,
                     max_target_length=max_target_length, num_buckets=num_buckets)

        def learn(texts: list[str]) -> list[str]:
            words = tf.data.Dataset.from_tensor_slices(texts).batch(1024).map(lambda x: _pretokenize(x, lower_case))
            return compute_word_piece_vocabulary(
                words, vocabulary_size, strip_accents=False, split=False, reserved_tokens=list(RESERVED_TOKENS)
            )

        if shared_vocabulary:
            source_vocabulary = learn(frame["source"].tolist() + frame["target"].tolist())
            target_vocabulary = None
        else:
            source_vocabulary = learn(frame["source"].tolist())
            target_vocabulary = learn(frame["target"].tolist())
        lengths = {"max_source_length": max_source_length, "max_target_length": max_target_length}
        return cls(source_vocabulary, target_vocabulary, lower_case=lower_case, num_buckets=num_buckets, **lengths)

    def get_config(self) -> dict:
        return {
            "source_vocabulary": list(self.source_vocabulary),
            "target_vocabulary": None if self.shared_vocabulary else list(self.target_vocabulary),
            "lower_case": self.lower_case,
            "max_source_length": self.max_source_length,
            "max_target_length": self.max_target_length,
            "num_buckets": self.num_buckets,
        }

    @classmethod
    def from_config(cls, config: dict) -> TranslationPreprocessor:
        expected = {"source_vocabulary", "target_vocabulary", "lower_case", "max_source_length",
                    "max_target_length", "num_buckets"}
        unknown, missing = sorted(set(config) - expected), sorted(expected - set(config))
        if unknown or missing:
            raise ValueError(
                f"TranslationPreprocessor.from_config: unknown keys {unknown}, missing keys {missing}; "
                f"expected {sorted(expected)}."
            )
        config = dict(config)
        return cls(config.pop("source_vocabulary"), config.pop("target_vocabulary"), **config)

    @property
    def source_vocabulary_size(self) -> int:
        return len(self.source_vocabulary)

    @property
    def target_vocabulary_size(self) -> int:
        return len(self.target_vocabulary)

    @property
    def bucket_shapes(self) -> list[tuple[int, int]]:
        """(encoder length, decoder length) of each bucket, increasing; the last is the maximum."""
        shapes = (
            (_bucket_bound(self.max_source_length, k, self.num_buckets),
             _bucket_bound(self.max_target_length, k, self.num_buckets))
            for k in range(1, self.num_buckets + 1)
        )
        return list(dict.fromkeys(shapes))

    def tf_tokenize(self, strings: tf.Tensor, side: str = "source") -> tf.RaggedTensor:
        """Strings `(batch,)` -> int32 word-piece ids `(batch, None)` (no `[START]`/`[END]`)."""
        tokenizer = self._tokenizer(side)
        strings = tf.strings.unicode_transcode(tf.convert_to_tensor(strings, tf.string), "UTF-8", "UTF-8")
        words = _pretokenize(strings, self.lower_case)
        return tokenizer.tokenize(words).merge_dims(-2, -1)

    def tf_detokenize(self, ids: tf.Tensor | tf.RaggedTensor, side: str = "target") -> tf.Tensor:
        """Ids `(batch, len)` (dense or ragged) -> readable strings `(batch,)`.

        Reads each row up to its first `[END]`, drops `[PAD]`/`[START]`, joins word pieces, and
        attaches punctuation, hyphens and apostrophes to their words.
        """
        tokenizer = self._tokenizer(side)
        ids = ids.to_tensor(PAD_ID) if isinstance(ids, tf.RaggedTensor) else tf.convert_to_tensor(ids)
        ids = tf.cast(ids, tf.int32)
        before_end = tf.math.cumsum(tf.cast(tf.equal(ids, END_ID), tf.int32), axis=1) == 0
        ids = tf.ragged.boolean_mask(ids, before_end & (ids != PAD_ID) & (ids != START_ID))
        text = tokenizer.detokenize(ids)
        for pattern, rewrite in _DETOKENIZE_RULES:
            text = tf.strings.regex_replace(text, pattern, rewrite)
        return text

    def length_stats(self, frame: pd.DataFrame) -> dict[str, int]:
        """Counts of pairs over `max_source_length`, over `max_target_length`, and over either."""
        _, _, stats = self._encode(read_parallel(frame))
        return stats

    def dataset(
        self,
        frame: pd.DataFrame,
        batch_size: int,
        shuffle: bool = False,
        training: bool = False,
        seed: int | None = None,
        *,
        drop_remainder: bool | None = None,
    ) -> tf.data.Dataset:
        """Yields `({"encoder_token_ids", "decoder_token_ids"}, labels)`, int32, padded with 0.

        Shapes: encoder `(batch, S)`, decoder inputs and labels `(batch, T)` with `(S, T)` one of
        `bucket_shapes`. Over-long pairs are skipped when `training` and truncated otherwise (both
        counted and logged). `drop_remainder` defaults to `training`, so training batches always
        hold `batch_size` pairs.
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"TranslationPreprocessor.dataset: batch_size must be a positive int, got {batch_size!r}.")
        frame = read_parallel(frame)
        source, target, stats = self._encode(frame)
        if stats["too_long"]:
            logger.warning(
                "TranslationPreprocessor.dataset: %s %d of %d pairs over max_source_length=%d (%d) or "
                "max_target_length=%d (%d, counting [START]/[END]).",
                "skipped" if training else "truncated", stats["too_long"], stats["pairs"],
                self.max_source_length, stats["source_too_long"], self.max_target_length, stats["target_too_long"],
            )
        if training:
            keep = (source.row_lengths() <= self.max_source_length) & (target.row_lengths() < self.max_target_length)
            source, target = tf.ragged.boolean_mask(source, keep), tf.ragged.boolean_mask(target, keep)
        else:
            source, target = source[:, : self.max_source_length], target[:, : self.max_target_length - 1]
        if source.nrows() == 0:
            raise ValueError(f"TranslationPreprocessor.dataset: no pairs left out of {stats['pairs']} ({stats}).")
        data = tf.data.Dataset.from_tensor_slices((source, target))
        if shuffle:
            data = data.shuffle(int(source.nrows()), seed=seed, reshuffle_each_iteration=True)
        data = data.map(teacher_forcing, num_parallel_calls=tf.data.AUTOTUNE)
        data = self._bucket(data, batch_size, training if drop_remainder is None else drop_remainder)
        return data.prefetch(tf.data.AUTOTUNE)

    def _tokenizer(self, side: str) -> tf_text.FastWordpieceTokenizer:
        if side not in SIDES:
            raise ValueError(f"TranslationPreprocessor: side must be one of {SIDES}, got {side!r}.")
        return self._tokenizers[side]

    def _encode(self, frame: pd.DataFrame) -> tuple[tf.RaggedTensor, tf.RaggedTensor, dict[str, int]]:
        source = self.tf_tokenize(tf.constant(frame["source"].tolist(), tf.string), "source")
        target = self.tf_tokenize(tf.constant(frame["target"].tolist(), tf.string), "target")
        source_long = (source.row_lengths() > self.max_source_length).numpy()
        target_long = (target.row_lengths() + 1 > self.max_target_length).numpy()
        stats = {"pairs": len(frame), "source_too_long": int(source_long.sum()),
                 "target_too_long": int(target_long.sum()), "too_long": int((source_long | target_long).sum())}
        return source, target, stats

    def _bucket(self, data: tf.data.Dataset, batch_size: int, drop_remainder: bool) -> tf.data.Dataset:
        source_bounds = tf.constant([s for s, _ in self.bucket_shapes], tf.int64)
        target_bounds = tf.constant([t for _, t in self.bucket_shapes], tf.int64)

        def key(inputs, labels):
            source_length = tf.shape(inputs["encoder_token_ids"], out_type=tf.int64)[0]
            target_length = tf.shape(labels, out_type=tf.int64)[0]
            fits = (source_length <= source_bounds) & (target_length <= target_bounds)
            return tf.argmax(tf.cast(fits, tf.int64), output_type=tf.int64)

        def batch(bucket, window):
            source_shape = tf.reshape(tf.gather(source_bounds, bucket), [1])
            target_shape = tf.reshape(tf.gather(target_bounds, bucket), [1])
            shapes = ({"encoder_token_ids": source_shape, "decoder_token_ids": target_shape}, target_shape)
            return window.padded_batch(batch_size, padded_shapes=shapes, drop_remainder=drop_remainder)

        return data.group_by_window(key, batch, window_size=batch_size)


def _check_sizes(**sizes: int) -> None:
    least = {"vocabulary_size": len(RESERVED_TOKENS) + 1, "num_buckets": 1}
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < least.get(name, 2):
            raise ValueError(f"TranslationPreprocessor: {name} must be an int >= {least.get(name, 2)}, got {value!r}.")


def _check_vocabulary(vocabulary, name: str) -> tuple[str, ...]:
    if not isinstance(vocabulary, (list, tuple)) or not all(isinstance(token, str) for token in vocabulary):
        raise TypeError(f"TranslationPreprocessor: {name} must be a list of strings, got {type(vocabulary).__name__}.")
    if tuple(vocabulary[: len(RESERVED_TOKENS)]) != RESERVED_TOKENS:
        raise ValueError(
            f"TranslationPreprocessor: {name} must start with {list(RESERVED_TOKENS)}, "
            f"got {list(vocabulary[: len(RESERVED_TOKENS)])}."
        )
    if len(set(vocabulary)) != len(vocabulary):
        raise ValueError(f"TranslationPreprocessor: {name} holds duplicate tokens.")
    return tuple(vocabulary)


def _wordpiece(vocabulary: tuple[str, ...]) -> tf_text.FastWordpieceTokenizer:
    return tf_text.FastWordpieceTokenizer(
        list(vocabulary), suffix_indicator="##", unknown_token="[UNK]", no_pretokenization=True,
        support_detokenization=True, token_out_type=tf.int32,
    )


def _pretokenize(strings: tf.Tensor, lower_case: bool) -> tf.RaggedTensor:
    """Strings `(batch,)` -> words `(batch, None)`: NFC, optional case folding, split on spaces and punctuation."""
    strings = tf_text.normalize_utf8(strings, "NFC")
    if lower_case:
        strings = tf_text.case_fold_utf8(strings)
    return tf_text.regex_split(strings, rf"{_WHITESPACE}|{_PUNCTUATION}", _PUNCTUATION)


def _bucket_bound(maximum: int, k: int, num_buckets: int) -> int:
    """Upper length of bucket k of `num_buckets`: a multiple of 8 below `maximum`, `maximum` for the last."""
    if k == num_buckets:
        return maximum
    return min(maximum, 8 * math.ceil(maximum * k / num_buckets / 8))
