"""Text data: tables of texts and labels, scored sentence pairs, and the data configs that name them.

Rules for awkward input:
- Empty or missing text is kept as "" and tokenizes to just `[CLS]`.
- A missing label (empty cell, NaN, None, blank string) is an error naming the rows.
- Bytes that are not valid UTF-8 become U+FFFD: at read time (`encoding_errors="replace"`, `bytes`
  cells decoded with `errors="replace"`) and again inside the graph (`tf.strings.unicode_transcode`),
  so a served model treats them as training did.
- Labels are normalised: integers, integral floats and integer strings become `int`, other labels
  stripped `str`. `label_names` are their `str` forms, sorted (integers first, numerically, then
  strings). An unknown label at evaluation is an error naming it and the known ones.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json",
           ".parquet": "parquet", ".pq": "parquet"}
_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".zip")
_INTEGER = re.compile(r"[+-]?\d+")


@dataclasses.dataclass
class TextDataConfig:
    """Where the text and labels are. `text_columns`: the first one present in a file is read
    (SST-2 calls it `sentence` in train.tsv and `content` in dev.tsv). `train` may be empty in a
    config whose data is always passed in (`train(data)`); training without `data` then stops."""

    train: str | None = "data/text_classification/train.csv"
    validation: str | None = "data/text_classification/valid.csv"
    test: str | None = "data/text_classification/test.csv"
    text_columns: tuple[str, ...] = ("text",)
    label_column: str = "label"
    multi_label: bool = False
    label_delimiter: str = "|"


@dataclasses.dataclass
class SentencePairsDataConfig:
    """Scored sentence pairs (`read_sentence_pairs`) for `SentenceEncoder.evaluate`: `test`. A sentence
    encoder is built from a checkpoint, not trained, so `train` and `validation` stay empty."""

    train: str | None = None
    validation: str | None = None
    test: str | None = None


def read_texts(data, data_config: TextDataConfig, labeled: bool = True) -> pd.DataFrame:
    """Reads a table with the configured columns (see `read_text_table`); a DataFrame already
    in `text`/`label` form passes through."""
    if isinstance(data, pd.DataFrame) and "text" in data.columns:
        text_columns, label_column = ("text",), "label"
    else:
        text_columns, label_column = data_config.text_columns, data_config.label_column
    return read_text_table(
        data,
        text_column=text_columns,
        label_column=label_column if labeled else None,
        multi_label=data_config.multi_label,
        label_delimiter=data_config.label_delimiter,
    )


def read_text_table(
    source: str | Path | pd.DataFrame,
    text_column: str | Sequence[str] = "text",
    label_column: str | None = "label",
    *,
    multi_label: bool = False,
    label_delimiter: str = "|",
) -> pd.DataFrame:
    """Reads texts (and labels) into a DataFrame with columns `text` (str) and `label`.

    `source` is a DataFrame or a file whose format follows its extension (optionally compressed,
    e.g. `.csv.gz`): `.csv` (standard quoting), `.tsv` (tab, no quoting, GLUE style), `.jsonl` /
    `.ndjson` (one object a line), `.json` (records) or `.parquet`. `label_column=None` reads
    unlabeled text (no `label` column). `text_column` may list candidates: the first one the
    table has is read (SST-2's `train.tsv` says `sentence`, its `dev.tsv` `content`). Single-label cells become `int` or `str`; with
    `multi_label=True` each cell is a list (JSONL/Parquet/DataFrame) or a string split on
    `label_delimiter`, and becomes a tuple of labels (possibly empty).
    """
    candidates = (text_column,) if isinstance(text_column, str) else tuple(text_column)
    if not candidates or not all(isinstance(c, str) for c in candidates) or not (
            label_column is None or isinstance(label_column, str)):
        raise TypeError(f"read_text_table: text_column and label_column must be strings (label_column may "
                        f"be None), got {text_column!r} and {label_column!r}.")
    if not isinstance(label_delimiter, str) or not label_delimiter:
        raise ValueError(f"read_text_table: label_delimiter must be a non-empty string, got {label_delimiter!r}.")
    table, where = _table(source, "read_text_table")
    text_column = next((c for c in candidates if c in table.columns), candidates[0])
    for column in (text_column, label_column):
        if column is not None and column not in table.columns:
            raise ValueError(f"read_text_table: {where} has no column {column!r}; "
                             f"columns are {[str(c) for c in table.columns]}.")
    frame = pd.DataFrame({"text": pd.Series([_text(v) for v in table[text_column]], dtype=object)})
    if label_column is not None:
        labels = _labels(list(table[label_column]), multi_label, label_delimiter, label_column, where)
        frame["label"] = pd.Series(labels, dtype=object)
    return frame


def read_sentence_pairs(
    source: str | Path | pd.DataFrame,
    columns: Sequence[str] = ("sentence1", "sentence2", "score"),
) -> pd.DataFrame:
    """Reads scored sentence pairs (STS-B style) into columns `sentence1`, `sentence2` (str) and `score`
    (float) from a DataFrame or a file in any format `read_text_table` reads. `columns` names the two
    text columns and the score column of the source."""
    table, where = _table(source, "read_sentence_pairs")
    absent = [c for c in columns if c not in table.columns]
    if len(columns) != 3 or absent:
        raise ValueError(f"read_sentence_pairs: {where} needs the columns {list(columns)} (two texts and a score); "
                         f"it lacks {absent}, its columns are {[str(c) for c in table.columns]}.")
    first, second, score = columns
    scores = pd.to_numeric(table[score], errors="coerce")
    bad = [int(i) for i in np.flatnonzero(~np.isfinite(scores.to_numpy(dtype=float)))]
    if bad:
        raise ValueError(f"read_sentence_pairs: {where} has {len(bad)} missing or non-numeric score(s) in column "
                         f"{score!r}, at row(s) {bad[:10]} (0-based, header excluded).")
    return pd.DataFrame({"sentence1": [_text(v) for v in table[first]], "sentence2": [_text(v) for v in table[second]],
                         "score": scores.astype(float).to_numpy()})


def _table(source, reader: str) -> tuple[pd.DataFrame, str]:
    """`(table, where)` of a DataFrame or a file (`_load`); `where` names it in errors."""
    if isinstance(source, pd.DataFrame):
        return source, "DataFrame"
    if isinstance(source, (str, Path)):
        return _load(Path(source)), str(source)
    raise TypeError(f"{reader}: source must be a path or a DataFrame, got {type(source).__name__}.")


def _load(path: Path) -> pd.DataFrame:
    suffixes = [s.lower() for s in path.suffixes]
    while suffixes and suffixes[-1] in _COMPRESSIONS:
        suffixes.pop()
    fmt = FORMATS.get(suffixes[-1] if suffixes else "")
    if fmt is None:
        raise ValueError(f"read_text_table: cannot tell the format of {str(path)!r}; "
                         f"expected one of the extensions {sorted(FORMATS)}.")
    if not path.is_file():
        raise FileNotFoundError(f"read_text_table: no such file {str(path)!r}.")
    text = {"encoding": "utf-8-sig", "encoding_errors": "replace"}
    if fmt in ("csv", "tsv"):
        quoting = csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL
        return pd.read_csv(path, sep="\t" if fmt == "tsv" else ",", quoting=quoting, dtype=object,
                           keep_default_na=False, na_values=[""], **text)
    if fmt == "parquet":
        return pd.read_parquet(path)
    return pd.read_json(path, lines=fmt == "jsonl", dtype=False, convert_dates=False, **text)


def _is_missing(value: object) -> bool:
    if isinstance(value, (list, tuple, np.ndarray, str)):
        return isinstance(value, str) and not value.strip()
    return value is None or bool(pd.isna(value))


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        return value
    return "" if _is_missing(value) else str(value)


def scalar_label(value: object) -> int | str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if not float(value).is_integer():
            raise ValueError(f"labels must be strings or integers, got the float {value!r}.")
        return int(value)
    text = str(value).strip()
    return int(text) if _INTEGER.fullmatch(text) else text


def _labels(values: list, multi_label: bool, delimiter: str, column: str, where: str) -> list:
    missing = [i for i, v in enumerate(values) if _is_missing(v)]
    if missing:
        raise ValueError(f"read_text_table: {where} has {len(missing)} missing label(s) in column {column!r}, "
                         f"at row(s) {missing[:10]} (0-based, header excluded); every example needs a label.")
    labels = []
    for row, value in enumerate(values):
        try:
            if isinstance(value, (list, tuple, np.ndarray)):
                if not multi_label:
                    raise ValueError("the cell holds a list; pass multi_label=True for multi-label data")
                labels.append(tuple(scalar_label(v) for v in value))
            elif multi_label:
                parts = [p for p in _text(value).split(delimiter) if p.strip()]
                labels.append(tuple(scalar_label(p) for p in parts))
            else:
                labels.append(scalar_label(value))
        except ValueError as error:
            raise ValueError(f"read_text_table: {where}, column {column!r}, row {row}: {error}.") from None
    return labels


def as_table(data: pd.DataFrame | Sequence[str], multi_label: bool) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        return read_text_table(data, label_column="label" if "label" in data.columns else None,
                               multi_label=multi_label)
    if isinstance(data, (str, bytes)) or not isinstance(data, Sequence | np.ndarray | pd.Series):
        raise TypeError(f"expected a DataFrame or a sequence of strings, got {type(data).__name__}.")
    return read_text_table(pd.DataFrame({"text": list(data)}), label_column=None)


@dataclasses.dataclass(frozen=True)
class PretrainingText:
    """Unlabeled text for masked-LM pretraining: `vocabulary_rows`, on which the vocabulary is fitted,
    and `rows`, the rows MLM reads; `len` is the number of rows read."""

    vocabulary_rows: pd.DataFrame
    rows: pd.DataFrame

    def __len__(self) -> int:
        return len(self.rows)


def pretraining_text(table: pd.DataFrame, sentences_only: bool) -> PretrainingText:
    """Every row of `table` for the vocabulary; with `sentences_only`, MLM reads only its
    `maximal_phrases` (SST-2's 64,000 phrases hold ~7,000 sentences)."""
    rows = pd.DataFrame({"text": maximal_phrases(table["text"].tolist())}) if sentences_only else table
    return PretrainingText(table, rows)


def maximal_phrases(texts: Sequence[str]) -> list[str]:
    """The distinct texts that are not a word span of a longer text (longest first).

    For treebank-style data such as SST-2, whose rows are the phrases of a few thousand sentences:
    this keeps each sentence once. Costs O(words**2) per text, so it suits sentences, not documents.
    """
    kept, spans = [], set()
    for text in sorted(set(texts), key=lambda t: (-len(t.split()), t)):
        if text in spans:
            continue
        kept.append(text)
        words = text.split()
        spans.update(" ".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, len(words) + 1))
    return kept


def sorted_label_names(labels: pd.Series, multi_label: bool) -> tuple[str, ...]:
    values = {v for cell in labels for v in cell} if multi_label else set(labels)
    if not values:
        raise ValueError("TextPreprocessor: the training labels are empty; at least one label is needed.")
    return tuple(str(v) for v in sorted(values, key=lambda v: (0, v, "") if isinstance(v, int) else (1, 0, v)))
