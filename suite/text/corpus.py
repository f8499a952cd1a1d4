"""Unlabeled text at corpus scale: files read as a stream, and masked-LM sequences packed from them.

A corpus is one document a line in `.txt` files (gzip-compressed when the name ends `.gz`), read with
`tf.data.TextLineDataset`: never all in memory. `packed_sequences` turns any stream of documents into
full fixed-length rows, as BERT and RoBERTa pretraining do (no padding to train on).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import tensorflow as tf

_TOKENIZE_CHUNK = 256
_CORPUS_SUFFIXES = (".txt", ".text")


@dataclasses.dataclass(frozen=True)
class TextCorpus:
    """Documents, one a line, in text files read as a stream.

    `paths` are `.txt` files, gzip-compressed if they end `.gz`, read in order. `skip` and `take`
    select lines of their concatenation (`take=None`: to the end), so `split(n)` can hold out the
    first `n` documents without copying anything.
    """

    paths: tuple[str, ...]
    skip: int = 0
    take: int | None = None

    @classmethod
    def read(cls, source: str | Path | list | tuple) -> TextCorpus:
        """A corpus of one file or a list of files; raises naming a missing or unsupported file."""
        paths = tuple(str(p) for p in (source if isinstance(source, (list, tuple)) else [source]))
        if not paths:
            raise ValueError("TextCorpus: expected at least one file, got an empty list.")
        for path in paths:
            if not is_corpus_file(path):
                raise ValueError(f"TextCorpus: {path!r} is not a corpus file; expected one document a line "
                                 f"in a file ending {' or '.join(_CORPUS_SUFFIXES)} (optionally + .gz).")
            if not Path(path).is_file():
                raise FileNotFoundError(f"TextCorpus: no such file {path!r}.")
        return cls(paths)

    def lines(self) -> tf.data.Dataset:
        """The documents as a dataset of scalar strings, in file order."""
        files = [tf.data.TextLineDataset(p, compression_type="GZIP" if p.endswith(".gz") else "") for p in self.paths]
        documents = files[0]
        for more in files[1:]:
            documents = documents.concatenate(more)
        documents = documents.skip(self.skip)
        return documents if self.take is None else documents.take(self.take)

    def __len__(self) -> int:
        """The number of documents (one pass over the files, remembered)."""
        return _count(self)

    def split(self, held_out: int) -> tuple[TextCorpus, TextCorpus]:
        """`(first held_out documents, the rest)`."""
        if held_out < 1 or held_out >= len(self):
            raise ValueError(f"TextCorpus.split: held_out must be in [1, {len(self) - 1}] for this corpus of "
                             f"{len(self)} documents, got {held_out}.")
        rest = None if self.take is None else self.take - held_out
        return (dataclasses.replace(self, take=held_out),
                dataclasses.replace(self, skip=self.skip + held_out, take=rest))

    def sample(self, count: int) -> list[str]:
        """About `count` documents spread evenly over the corpus (every k-th line), as Python strings."""
        stride = max(len(self) // max(count, 1), 1)
        return [line.decode("utf-8", errors="replace")
                for line in self.lines().shard(stride, 0).take(count).as_numpy_iterator()]


_COUNTS: dict[TextCorpus, int] = {}


def _count(corpus: TextCorpus) -> int:
    if corpus not in _COUNTS:
        _COUNTS[corpus] = int(corpus.lines().reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))
    return _COUNTS[corpus]


def is_corpus_file(source) -> bool:
    """Whether `source` names a corpus file (`.txt`, optionally `.gz`)."""
    if not isinstance(source, (str, Path)):
        return False
    name = str(source).lower()
    return name.removesuffix(".gz").endswith(_CORPUS_SUFFIXES)


def document_pieces(documents: tf.data.Dataset, preprocessor) -> tf.data.Dataset:
    """Documents -> 1-D int32 word-piece ids of chunks of consecutive documents, each document
    followed by `[SEP]` (RoBERTa's document separator)."""
    separator = preprocessor.sep_id
    if separator is None:
        raise ValueError("packing needs a [SEP] token between documents; the vocabulary has none.")

    def pieces(texts: tf.Tensor) -> tf.Tensor:
        words = preprocessor.word_pieces(texts)
        ends = tf.fill([words.nrows(), 1], separator)
        return tf.concat([words, tf.RaggedTensor.from_tensor(ends, row_splits_dtype=words.row_splits.dtype)],
                         axis=1).flat_values

    return documents.batch(_TOKENIZE_CHUNK).map(pieces, num_parallel_calls=tf.data.AUTOTUNE)


def packed_sequences(documents: tf.data.Dataset, preprocessor, sequence_length: int) -> tf.data.Dataset:
    """Documents (scalar strings) -> rows `(sequence_length,)` int32 with no padding.

    Each row is `[CLS]` + the next `sequence_length - 2` word pieces of the stream + `[SEP]`; the
    pieces of consecutive documents run on across rows with `[SEP]` between documents (RoBERTa's
    FULL-SENTENCES packing). The stream's last, partial row is dropped.
    """
    body = sequence_length - 2
    if body < 1:
        raise ValueError(f"packed_sequences: sequence_length must be at least 3, got {sequence_length}.")
    cls_id, sep_id = preprocessor.cls_id, preprocessor.sep_id

    def pack(carry: tf.Tensor, pieces: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        pieces = tf.concat([carry, pieces], axis=0)
        full = tf.size(pieces) // body * body
        return pieces[full:], tf.reshape(pieces[:full], [-1, body])

    def frame(rows: tf.Tensor) -> tf.Tensor:
        count = tf.shape(rows)[0]
        return tf.concat([tf.fill([count, 1], cls_id), rows, tf.fill([count, 1], sep_id)], axis=1)

    rows = document_pieces(documents, preprocessor).scan(tf.zeros([0], tf.int32), pack)
    return rows.map(frame).unbatch()


def packed_length(documents: tf.data.Dataset, preprocessor, sequence_length: int) -> int:
    """How many rows `packed_sequences` makes of `documents` (one tokenizing pass)."""
    total = document_pieces(documents, preprocessor).reduce(
        tf.constant(0, tf.int64), lambda n, pieces: n + tf.size(pieces, out_type=tf.int64))
    return int(total) // (sequence_length - 2)
