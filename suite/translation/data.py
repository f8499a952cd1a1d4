"""Parallel corpora for translation: the data config and `read_parallel`, which turns two aligned text
files, a TSV/CSV or a DataFrame into a `source`/`target` DataFrame."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import logging
from pathlib import Path

import pandas as pd

logger = logging.getLogger(__name__)

SIDES = ("source", "target")
_TABLE_SEPARATORS = {".tsv": "\t", ".tab": "\t", ".csv": ","}


@dataclasses.dataclass
class TranslationDataConfig:
    """Where the pairs are. A path with `{lang}` names two line-aligned text files (plain or
    `.gz`), filled in with `source_language` and `target_language`; any other path is a TSV/CSV
    with `source_column` and `target_column`."""

    train: str = "data/translation/train.tsv"
    validation: str | None = "data/translation/valid.tsv"
    test: str | None = None
    source_language: str = "en"
    target_language: str = "de"
    source_column: str = "source"
    target_column: str = "target"


def read_translation_pairs(data, config: TranslationDataConfig) -> pd.DataFrame:
    """Pairs from a DataFrame (`source`/`target`, else the configured columns), a TSV/CSV with the
    configured columns, or a `{lang}` path of two aligned files filled in with the two languages."""
    if isinstance(data, pd.DataFrame):
        columns = {"source", "target"} <= set(data.columns)
        return read_parallel(data, source_column="source" if columns else config.source_column,
                             target_column="target" if columns else config.target_column)
    if isinstance(data, str) and "{lang}" in data:
        return read_parallel(data.format(lang=config.source_language), data.format(lang=config.target_language))
    return read_parallel(data, source_column=config.source_column, target_column=config.target_column)


def read_parallel(
    source: str | Path | pd.DataFrame,
    target: str | Path | None = None,
    *,
    source_column: str = "source",
    target_column: str = "target",
    empty: str = "skip",
) -> pd.DataFrame:
    """Reads a parallel corpus into a DataFrame with string columns `source` and `target`.

    `source` is one of: a DataFrame; a `.tsv`/`.csv` file (optionally `.gz`) with columns
    `source_column` and `target_column`; or, with `target` given, the source side of two
    line-aligned text files (plain or `.gz`). Files of different line counts raise. Pairs with an
    empty side are dropped as whole pairs and counted (`empty="skip"`, the count is logged and kept
    in `frame.attrs["skipped_empty"]`) or raise (`empty="error"`); sides are stripped of
    surrounding whitespace.
    """
    if empty not in ("skip", "error"):
        raise ValueError(f"read_parallel: empty must be 'skip' or 'error', got {empty!r}.")
    if isinstance(source, pd.DataFrame):
        if target is not None:
            raise ValueError("read_parallel: target must be None when source is a DataFrame.")
        frame = _from_columns(source, source_column, target_column, "DataFrame")
        return _drop_empty(frame, "DataFrame", "row", 0, empty)
    if not isinstance(source, (str, Path)):
        raise TypeError(f"read_parallel: source must be a path or a DataFrame, got {type(source).__name__}.")
    if target is not None:
        return _drop_empty(_read_aligned(Path(source), Path(target)), f"{source} / {target}", "line", 1, empty)
    return _drop_empty(_read_table(Path(source), source_column, target_column), str(source), "line", 2, empty)


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"read_parallel: no such file {str(path)!r}.")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8-sig", newline="\n") as handle:
        return [line.rstrip("\r\n") for line in handle]


def _read_aligned(source: Path, target: Path) -> pd.DataFrame:
    sources, targets = _read_lines(source), _read_lines(target)
    if len(sources) != len(targets):
        raise ValueError(
            f"read_parallel: the files are not aligned: {str(source)!r} has {len(sources)} lines but "
            f"{str(target)!r} has {len(targets)} lines; line i of one must translate line i of the other."
        )
    return pd.DataFrame({"source": sources, "target": targets})


def _read_table(path: Path, source_column: str, target_column: str) -> pd.DataFrame:
    suffixes = [s.lower() for s in path.suffixes]
    kind = suffixes[-2] if suffixes[-1:] == [".gz"] and len(suffixes) > 1 else (suffixes or [""])[-1]
    if kind not in _TABLE_SEPARATORS:
        raise ValueError(
            f"read_parallel: cannot tell the format of {str(path)!r}: expected a .tsv or .csv file "
            "(optionally .gz), or two aligned text files (read_parallel(source_path, target_path))."
        )
    if not path.is_file():
        raise FileNotFoundError(f"read_parallel: no such file {str(path)!r}.")
    separator = _TABLE_SEPARATORS[kind]
    quoting = csv.QUOTE_NONE if separator == "\t" else csv.QUOTE_MINIMAL
    try:
        table = pd.read_csv(
            path, sep=separator, dtype=str, keep_default_na=False, quoting=quoting, encoding="utf-8-sig"
        )
    except pd.errors.ParserError as error:
        raise ValueError(f"read_parallel: cannot parse {str(path)!r}: {error}") from error
    return _from_columns(table, source_column, target_column, repr(str(path)))


def _from_columns(table: pd.DataFrame, source_column: str, target_column: str, name: str) -> pd.DataFrame:
    missing = [c for c in (source_column, target_column) if c not in table.columns]
    if missing:
        raise ValueError(
            f"read_parallel: {name} lacks column(s) {missing}; it has {list(table.columns)}. "
            "Pass source_column=/target_column= to name the columns to use."
        )
    columns = dict(zip(SIDES, (source_column, target_column)))
    frame = pd.DataFrame({side: table[column].to_numpy() for side, column in columns.items()})
    for side in SIDES:
        values = frame[side]
        values = values.where(values.notna(), "")
        bad = values.map(lambda v: not isinstance(v, str))
        if bad.any():
            row = int(bad.to_numpy().argmax())
            raise TypeError(
                f"read_parallel: {name} column {side!r} must hold strings; row {row} holds "
                f"{type(values.iloc[row]).__name__} {values.iloc[row]!r}."
            )
        frame[side] = values
    return frame


def _drop_empty(frame: pd.DataFrame, name: str, unit: str, first: int, empty: str) -> pd.DataFrame:
    frame = frame.assign(source=frame["source"].str.strip(), target=frame["target"].str.strip())
    is_empty = (frame["source"] == "") | (frame["target"] == "")
    count = int(is_empty.sum())
    if count:
        where = [int(i) + first for i in frame.index[is_empty][:5]]
        message = (
            f"read_parallel({name}): {count} of {len(frame)} pairs have an empty side "
            f"({unit}s {where}{' ...' if count > 5 else ''})"
        )
        if empty == "error":
            raise ValueError(message + "; pass empty='skip' to drop them as whole pairs.")
        logger.warning("%s; dropped them as whole pairs.", message)
    frame = frame[~is_empty].reset_index(drop=True)
    frame.attrs["skipped_empty"] = count
    return frame
