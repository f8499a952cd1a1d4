"""WordPiece tokenisation in the graph (BERT's, token for token as Hugging Face's), labels, tf.data batches.

- Normalisation is BERT's, exactly as Hugging Face's `BertNormalizer` does it (`normalize_text`): control
  characters and U+FFFD removed, CJK ideographs split into words, and with `lower_case=True` accents
  stripped and text lower-cased; with `lower_case=False` text is only cleaned and stays cased. Words
  of more than 100 characters become `[UNK]`, as in BERT's WordPiece.
- Token ids: vocabularies fitted here start `[PAD]`=0, `[UNK]`=1, `[CLS]`=2, `[SEP]`=3, `[MASK]`=4; a
  checkpoint's vocabulary keeps its own ids (found by name). Sequences are `[CLS]` + word pieces
  (+ `[SEP]` with `separator=True`, BERT's framing), truncated to the sequence length: word pieces
  from the start (`truncation="head"`), or with `"head_tail"` the first quarter of the word-piece
  budget from the start and the rest from the end (Sun et al. 2019, "How to Fine-Tune BERT for Text
  Classification?": 128 + 382 of 510 was best on IMDB); `padding_mask` is `token_ids != [PAD]`.
  Text that spells a special token ("[SEP]") is plain text.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_text as tf_text

from suite.export import checked_input
from suite.text.data import as_table, scalar_label, sorted_label_names

RESERVED_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(len(RESERVED_TOKENS))
_TOKENIZE_CHUNK = 1024
TRUNCATIONS = ("head", "head_tail")
MAX_WORD_CHARACTERS = 100
_CJK = (r"\x{4E00}-\x{9FFF}\x{3400}-\x{4DBF}\x{20000}-\x{2A6DF}\x{2A700}-\x{2B73F}\x{2B740}-\x{2B81F}"
        r"\x{2B820}-\x{2CEAF}\x{F900}-\x{FAFF}\x{2F800}-\x{2FA1F}")
# BERT's pre-tokenisation: words end at whitespace (dropped) and at punctuation, which is a word of its own.
_PUNCTUATION = r"[\p{P}!-/:-@\[-`{-~]"
_WORD_BOUNDARY = rf"[\s\p{{Z}}]|{_PUNCTUATION}"


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


class TextPreprocessor(tf.Module):
    """WordPiece vocabulary, label names and tokenization shared by tf.data and the export graph.

    A `tf.Module`: attach it to the exported module so the tokenizer travels with the SavedModel.
    """

    def __init__(
        self,
        vocabulary: Sequence[str],
        label_names: Sequence[str] = (),
        multi_label: bool = False,
        lower_case: bool = True,
        bucket_lengths: Sequence[int] = (32, 64, 128),
        strip_accents: bool | None = None,
        separator: bool = False,
        truncation: str = "head",
    ):
        super().__init__(name="text_preprocessor")
        if truncation not in TRUNCATIONS:
            raise ValueError(f"truncation must be one of {list(TRUNCATIONS)}, got {truncation!r}.")
        vocabulary = tuple(str(token) for token in vocabulary)
        needed = RESERVED_TOKENS[:4] if separator else RESERVED_TOKENS[:3]
        missing = [token for token in needed if token not in vocabulary]
        repeated = sorted({token for token in vocabulary if vocabulary.count(token) > 1}) if len(set(vocabulary)) < len(
            vocabulary) else []
        if repeated:
            raise ValueError(f"vocabulary tokens must be unique; repeated: {repeated[:10]}.")
        if missing or len(vocabulary) <= len(needed):
            raise ValueError(f"vocabulary must hold the special tokens {list(needed)} and more, but it lacks "
                             f"{missing} ({len(vocabulary)} tokens: {list(vocabulary[:8])}...).")
        buckets = tuple(_positive_int("bucket_lengths entries", b) for b in bucket_lengths)
        if not buckets or min(buckets) < 2 or list(buckets) != sorted(set(buckets)):
            raise ValueError(f"bucket_lengths must be strictly increasing integers >= 2, got {list(bucket_lengths)}.")
        names = tuple(str(name) for name in label_names)
        if len(set(names)) != len(names):
            raise ValueError(f"label_names must be unique, got {list(names)}.")
        self.vocabulary, self.label_names, self.bucket_lengths = vocabulary, names, buckets
        self.multi_label, self.lower_case = bool(multi_label), bool(lower_case)
        self.strip_accents = None if strip_accents is None else bool(strip_accents)
        self.separator, self.truncation = bool(separator), truncation
        self.pad_id, self.unk_id, self.cls_id = (vocabulary.index(token) for token in RESERVED_TOKENS[:3])
        self.sep_id = vocabulary.index("[SEP]") if "[SEP]" in vocabulary else None
        self.mask_id = vocabulary.index("[MASK]") if "[MASK]" in vocabulary else None
        self._label_ids = {name: i for i, name in enumerate(names)}
        self._tokenizer = tf_text.FastWordpieceTokenizer(
            list(vocabulary), token_out_type=tf.int32, unknown_token="[UNK]", no_pretokenization=True,
            max_bytes_per_word=4 * MAX_WORD_CHARACTERS)

    @classmethod
    def fit(
        cls,
        data: pd.DataFrame | Sequence[str],
        *,
        vocabulary_size: int = 8000,
        lower_case: bool = True,
        bucket_lengths: Sequence[int] = (32, 64, 128),
        truncation: str = "head",
    ) -> TextPreprocessor:
        """Learns the vocabulary (about `vocabulary_size` tokens) and the label names from training data.

        Multi-label is inferred from the labels being tuples (see `read_text_table`); a table without
        a `label` column (or a list of texts) gives a preprocessor without labels, e.g. for MLM.
        """
        import keras_hub

        vocabulary_size = _positive_int("vocabulary_size", vocabulary_size)
        if vocabulary_size <= len(RESERVED_TOKENS):
            raise ValueError(f"vocabulary_size must exceed the {len(RESERVED_TOKENS)} reserved tokens, "
                             f"got {vocabulary_size}.")
        labels = data["label"] if isinstance(data, pd.DataFrame) and "label" in data.columns else []
        multi_label = len(labels) > 0 and all(isinstance(v, (list, tuple, np.ndarray)) for v in labels)
        table = as_table(data, multi_label)
        if table.empty:
            raise ValueError("TextPreprocessor.fit: the training data holds no texts.")
        texts = tf.data.Dataset.from_tensor_slices(tf.constant(table["text"].tolist(), tf.string))
        texts = texts.batch(_TOKENIZE_CHUNK).map(lambda t: normalize_text(t, bool(lower_case)))
        vocabulary = keras_hub.tokenizers.compute_word_piece_vocabulary(
            texts, vocabulary_size, reserved_tokens=list(RESERVED_TOKENS))
        names = sorted_label_names(table["label"], multi_label) if "label" in table.columns else ()
        return cls(vocabulary, names, multi_label, lower_case, bucket_lengths, truncation=truncation)

    def with_labels(self, data: pd.DataFrame) -> TextPreprocessor:
        """The same vocabulary with label names (and multi-label flag) taken from `data`."""
        if not isinstance(data, pd.DataFrame) or "label" not in data.columns:
            raise ValueError("with_labels: data must be a DataFrame with a 'label' column (see read_text_table).")
        multi_label = len(data) > 0 and all(isinstance(v, (list, tuple, np.ndarray)) for v in data["label"])
        names = sorted_label_names(as_table(data, multi_label)["label"], multi_label)
        return TextPreprocessor(**{**self.get_config(), "label_names": names, "multi_label": multi_label})

    @property
    def vocabulary_size(self) -> int:
        return len(self.vocabulary)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def sequence_length(self) -> int:
        """The longest bucket: texts are truncated to this many tokens, `[CLS]` included."""
        return self.bucket_lengths[-1]

    def word_pieces(self, strings: tf.Tensor | Sequence[str]) -> tf.RaggedTensor:
        """Strings `(batch,)` -> ragged int32 word-piece ids `(batch, (pieces))`, untruncated, no special tokens."""
        strings = tf.convert_to_tensor(strings, dtype=tf.string)
        words = split_words(normalize_text(strings, self.lower_case, self.strip_accents))
        return self._tokenizer.tokenize(words).merge_dims(1, 2)

    def word_piece_counts(self, texts: pd.DataFrame | Sequence[str]) -> np.ndarray:
        """Texts `(n,)` (or a table's `text` column) -> the number of word pieces of each `(n,)` int64,
        before truncation and without special tokens: a text was truncated when its count exceeds
        `sequence_length - 1 - separator`."""
        table = as_table(texts, False)
        lengths = (tf.data.Dataset.from_tensor_slices(tf.constant(table["text"].tolist(), tf.string))
                   .batch(_TOKENIZE_CHUNK).map(lambda text: self.word_pieces(text).row_lengths()))
        return np.concatenate([np.zeros(0, np.int64), *(chunk.numpy() for chunk in lengths)])

    def tf_token_ids(self, strings: tf.Tensor | Sequence[str], max_length: int | None = None) -> tf.RaggedTensor:
        """Strings `(batch,)` -> ragged int32 ids `(batch, (len))`: `[CLS]` + word pieces (+ `[SEP]`),
        len <= max_length; the word pieces are cut as `truncation` says (see the module docstring)."""
        max_length = _positive_int("max_length", max_length or self.sequence_length)
        if max_length < 2 + self.separator:
            raise ValueError(f"max_length must leave room for a word piece after the special tokens, got {max_length}.")
        pieces = self.word_pieces(strings)
        budget = max_length - 1 - self.separator
        pieces = pieces[:, :budget] if self.truncation == "head" else head_tail(pieces, budget)
        rows = tf.stack([pieces.nrows(), 1])
        splits = pieces.row_splits.dtype
        parts = [tf.RaggedTensor.from_tensor(tf.fill(rows, self.cls_id), row_splits_dtype=splits), pieces]
        if self.separator:
            parts.append(tf.RaggedTensor.from_tensor(tf.fill(rows, self.sep_id), row_splits_dtype=splits))
        return tf.concat(parts, axis=1)

    def tf_tokenize(self, strings: tf.Tensor | Sequence[str], sequence_length: int | None = None
                    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Strings `(batch,)` -> `token_ids (batch, L)` int32 and `padding_mask (batch, L)` bool.

        With `sequence_length`, L is that (static). Without, L is the smallest of `bucket_lengths` that
        holds the batch's longest text, so short requests are not padded to the longest bucket (a few
        programs where serving is XLA-compiled). Longer texts are truncated; empty strings and a batch
        of 0 work.
        """
        if sequence_length is not None:
            length = _positive_int("sequence_length", sequence_length)
            token_ids = self.tf_token_ids(strings, length).to_tensor(default_value=self.pad_id, shape=[None, length])
            return token_ids, tf.not_equal(token_ids, self.pad_id)
        ids = self.tf_token_ids(strings)
        buckets = tf.constant(self.bucket_lengths, tf.int64)
        length = tf.reduce_min(tf.boolean_mask(buckets, buckets >= tf.reduce_max(ids.row_lengths())))
        token_ids = ids.to_tensor(default_value=self.pad_id)
        token_ids = tf.pad(token_ids, [[0, 0], [0, length - tf.shape(token_ids, tf.int64)[1]]],
                           constant_values=self.pad_id)
        return token_ids, tf.not_equal(token_ids, self.pad_id)

    def serving_inputs(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
        """A serving signature's `text` `(batch,)`, checked to be rank 1 (`checked_input`), as model
        inputs `{"token_ids", "padding_mask"}` padded to the smallest bucket that holds the batch."""
        token_ids, padding_mask = self.tf_tokenize(checked_input(text, "text", (None,)))
        return {"token_ids": token_ids, "padding_mask": padding_mask}

    def encode_labels(self, labels: Sequence) -> np.ndarray:
        """Labels -> class ids `(n,)` int32, or multi-hot `(n, num_labels)` float32 when multi-label."""
        if not self.label_names:
            raise ValueError("encode_labels: this preprocessor has no label names; fit it on labeled data "
                             "or call with_labels(train_df).")
        if self.multi_label:
            encoded = np.zeros((len(labels), self.num_labels), np.float32)
            for row, value in enumerate(labels):
                for label in value if isinstance(value, (list, tuple, np.ndarray)) else [value]:
                    encoded[row, self._label_id(label, row)] = 1.0
            return encoded
        return np.array([self._label_id(v, row) for row, v in enumerate(labels)], np.int32).reshape(-1)

    def _label_id(self, label: object, row: int) -> int:
        name = str(scalar_label(label))
        if name not in self._label_ids:
            raise ValueError(f"unknown label {name!r} at row {row}; the model knows the labels {list(self.label_names)}.")
        return self._label_ids[name]

    def dataset(self, data: pd.DataFrame | Sequence[str], batch_size: int, *, shuffle: bool = False,
                training: bool = False, seed: int | None = None) -> tf.data.Dataset:
        """Batches `({"token_ids", "padding_mask"}, labels)`; inputs only when `data` has no `label` column.

        Shapes `(b, L)` with L one of `bucket_lengths`. With `shuffle` or `training`, examples are grouped
        by length (`bucket_by_sequence_length`, order not kept; `training` drops each bucket's last partial
        batch). Otherwise order is kept and each batch is padded to the smallest bucket that fits it.
        Labels: `(b,)` int32 class ids, or `(b, num_labels)` float32 multi-hot.
        """
        table = as_table(data, self.multi_label)
        targets = self.encode_labels(table["label"]) if "label" in table.columns else None
        return self._batches(table["text"].tolist(), targets, batch_size, shuffle, training, seed)

    def unlabeled_dataset(self, texts: pd.DataFrame | Sequence[str], batch_size: int, *, shuffle: bool = False,
                          training: bool = False, seed: int | None = None) -> tf.data.Dataset:
        """Batches `{"token_ids", "padding_mask"}` of texts (as `dataset`, labels ignored), e.g. for MLM."""
        table = as_table(texts, False)
        return self._batches(table["text"].tolist(), None, batch_size, shuffle, training, seed)

    def _batches(self, texts: list[str], targets: np.ndarray | None, batch_size: int, shuffle: bool,
                 training: bool, seed: int | None) -> tf.data.Dataset:
        batch_size = _positive_int("batch_size", batch_size)
        columns = (tf.constant(texts, tf.string),) + (() if targets is None else (targets,))
        examples = (tf.data.Dataset.from_tensor_slices(columns).batch(_TOKENIZE_CHUNK)
                    .map(lambda text, *rest: (self.tf_token_ids(text), *rest), num_parallel_calls=tf.data.AUTOTUNE)
                    .unbatch().map(lambda ids, *rest: (tf.convert_to_tensor(ids), *rest)).cache())
        padding = (tf.constant(self.pad_id, tf.int32),) + (() if targets is None else (tf.constant(0, targets.dtype),))
        if shuffle:
            examples = examples.shuffle(max(len(texts), 1), seed=seed, reshuffle_each_iteration=True)
        if shuffle or training:
            batches = examples.bucket_by_sequence_length(
                lambda ids, *rest: tf.shape(ids)[0], [length + 1 for length in self.bucket_lengths],
                [batch_size] * (len(self.bucket_lengths) + 1), padding_values=padding, pad_to_bucket_boundary=True,
                drop_remainder=training)
        else:
            buckets = tf.constant(self.bucket_lengths, tf.int32)

            def to_bucket(ids: tf.Tensor, *rest: tf.Tensor) -> tuple:
                width = tf.shape(ids)[1]
                target = tf.reduce_min(tf.boolean_mask(buckets, buckets >= width))
                return (tf.pad(ids, [[0, 0], [0, target - width]], constant_values=self.pad_id), *rest)

            batches = examples.padded_batch(batch_size, padding_values=padding).map(to_bucket)

        def to_inputs(ids: tf.Tensor, *rest: tf.Tensor):
            inputs = {"token_ids": ids, "padding_mask": tf.not_equal(ids, self.pad_id)}
            return (inputs, *rest) if rest else inputs

        return batches.map(to_inputs, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    def get_config(self) -> dict:
        return {"vocabulary": list(self.vocabulary), "label_names": list(self.label_names),
                "multi_label": self.multi_label, "lower_case": self.lower_case,
                "bucket_lengths": list(self.bucket_lengths), "strip_accents": self.strip_accents,
                "separator": self.separator, "truncation": self.truncation}

    @classmethod
    def from_config(cls, config: dict) -> TextPreprocessor:
        required = {"vocabulary", "label_names", "multi_label", "lower_case", "bucket_lengths"}
        expected = required | {"strip_accents", "separator", "truncation"}
        unknown, missing = sorted(set(config) - expected), sorted(required - set(config))
        if unknown or missing:
            raise ValueError(f"TextPreprocessor.from_config: unknown keys {unknown}, missing keys {missing}; "
                             f"expected {sorted(expected)}.")
        return cls(**config)


def head_tail(pieces: tf.RaggedTensor, budget: int) -> tf.RaggedTensor:
    """Ragged ids `(batch, (len))` -> at most `budget` of each row `(batch, (<= budget))`: a row that is
    longer keeps its first `ceil(budget / 4)` ids and its last `budget - ceil(budget / 4)` (128 + 382 of
    510, as Sun et al.); shorter rows are unchanged. Graph ops only (serving runs them)."""
    lengths = pieces.row_lengths()
    kept = tf.minimum(lengths, budget)
    positions = tf.ragged.range(kept)
    # Positions past the head move to the row's tail: by `lengths - budget` in long rows, by 0 in short ones.
    skipped = (lengths - kept)[:, None]
    indices = positions + tf.cast(positions >= -(-budget // 4), lengths.dtype) * skipped
    return tf.gather(pieces, indices, batch_dims=1)


def normalize_text(strings: tf.Tensor, lower_case: bool = True, strip_accents: bool | None = None) -> tf.Tensor:
    """BERT's normalisation of strings `(batch,)`, token for token as Hugging Face's `BertNormalizer`
    and `BertPreTokenizer` see it, in TF ops that TF Serving runs.

    Invalid UTF-8 becomes U+FFFD; tab, newline and carriage return become spaces; U+FFFD, other control,
    format and private-use characters are removed; CJK ideographs are spaced apart; accents are stripped
    (NFD, then nonspacing marks removed) when `strip_accents`, which defaults to `lower_case`; then
    text is lower-cased character by character.
    """
    strings = tf.strings.unicode_transcode(strings, "UTF-8", "UTF-8", errors="replace")
    strings = tf.strings.regex_replace(strings, r"[\t\n\r]", " ")
    strings = tf.strings.regex_replace(strings, r"[\x{FFFD}\p{Cc}\p{Cf}\p{Co}]", "")
    strings = tf.strings.regex_replace(strings, f"([{_CJK}])", r" \1 ")
    if lower_case if strip_accents is None else strip_accents:
        strings = tf.strings.regex_replace(tf_text.normalize_utf8(strings, "NFD"), r"\p{Mn}", "")
    if lower_case:
        # Character by character: ICU's string lower-casing would turn a word-final Σ into ς.
        strings = tf.strings.lower(tf.strings.regex_replace(strings, "Σ", "σ"), encoding="utf-8")
    return strings


def split_words(strings: tf.Tensor) -> tf.RaggedTensor:
    """Normalised strings `(batch,)` -> words `(batch, (words))` as BERT splits them: at whitespace and
    around each punctuation character. A word of more than `MAX_WORD_CHARACTERS` characters becomes a
    private-use character (no token, so one `[UNK]`), as BERT's WordPiece treats it."""
    words = tf_text.regex_split(strings, _WORD_BOUNDARY, _PUNCTUATION)
    overlong = tf.strings.length(words.flat_values, unit="UTF8_CHAR") > MAX_WORD_CHARACTERS
    return words.with_flat_values(tf.where(overlong, "\uE000", words.flat_values))


def mask_tokens(token_ids: tf.Tensor, padding_mask: tf.Tensor, seed: tf.Tensor, *, vocab_size: int,
                rate: float = 0.15, mask_id: int = MASK_ID, first_regular_id: int = len(RESERVED_TOKENS),
                word_starts: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """BERT masking of `token_ids (b, L)`: returns `masked_ids (b, L)`, `target_ids (b, L)`, `weights (b, L)`.

    Each real token (not padding, id >= `first_regular_id`, so never `[CLS]`/`[UNK]`/...) is selected
    with probability `rate`; a selected token becomes `[MASK]` (80%), a random regular token (10%) or
    stays (10%). `weights` is 1.0 at selected positions. `seed` is a stateless seed `(2,)`.
    With `word_starts (b, L)` (true where a word's first piece is), whole words are selected: every
    piece of a selected word, as BERT's whole-word masking does.
    """
    if not 0.0 < rate < 1.0:
        raise ValueError(f"mask_tokens: rate must be in (0, 1), got {rate!r}.")
    if vocab_size <= first_regular_id:
        raise ValueError(f"mask_tokens: vocab_size {vocab_size} leaves no regular token to draw.")
    token_ids = tf.convert_to_tensor(token_ids, tf.int32)
    shape = tf.shape(token_ids)
    select_seed, action_seed, random_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    selectable = tf.logical_and(tf.cast(padding_mask, tf.bool), token_ids >= first_regular_id)
    if word_starts is None:
        draws = tf.random.stateless_uniform(shape, select_seed)
    else:
        words = tf.cumsum(tf.cast(word_starts, tf.int32), axis=1)
        draws = tf.gather(tf.random.stateless_uniform(shape + [0, 1], select_seed), words, batch_dims=1)
    selected = tf.logical_and(selectable, draws < rate)
    action = tf.random.stateless_uniform(shape, action_seed)
    random_ids = tf.random.stateless_uniform(shape, random_seed, minval=first_regular_id, maxval=vocab_size,
                                             dtype=tf.int32)
    masked = tf.where(tf.logical_and(selected, action < 0.8), tf.constant(mask_id, tf.int32), token_ids)
    masked = tf.where(tf.logical_and(selected, action >= 0.9), random_ids, masked)
    return masked, token_ids, tf.cast(selected, tf.float32)
