"""Ranking metrics for next-item recommendation, and the baselines evaluated alongside.

A rank is the 1-based position of the held-out target among the candidates, `inf` when the
target cannot be ranked (padding or out-of-vocabulary). Ties count against the target: its
rank is 1 + the number of other candidates scoring at least as high.

Item indices follow `RecommendationPreprocessor`: 0 is padding, 1 the OOV bucket, items
from 2; scores are `(n, vocabulary_size)` arrays over all indices.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np
import scipy.sparse

FIRST_ITEM = 2
MAX_SCORES = 1 << 24


def full_ranking_ranks(scores: np.ndarray, targets: np.ndarray,
                       exclude: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """Ranks `(n,)` of `targets` `(n,)` among all items by `scores` `(n, vocabulary_size)`.

    `exclude` holds, per row, item indices removed from the candidates (the user's seen
    items), as a recommender excluding them would; a target among them ranks `inf`.
    """
    scores = np.array(scores, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if scores.ndim != 2 or targets.shape != (len(scores),):
        raise ValueError(f"expected scores (n, vocabulary_size) and targets (n,); "
                         f"got {scores.shape} and {targets.shape}.")
    rows = np.arange(len(scores))
    rankable = targets >= FIRST_ITEM
    target_scores = scores[rows, np.where(rankable, targets, 0)]
    scores[:, :FIRST_ITEM] = -np.inf
    if exclude is not None:
        if len(exclude) != len(scores):
            raise ValueError(f"exclude has {len(exclude)} rows; scores have {len(scores)}.")
        for row, items in enumerate(exclude):
            items = np.asarray(items, dtype=np.int64)
            scores[row, items] = -np.inf
            rankable[row] &= targets[row] not in items
    scores[rows, targets] = -np.inf
    ranks = 1.0 + (scores >= target_scores[:, None]).sum(axis=1)
    return np.where(rankable, ranks, np.inf)


def sampled_ranks(scores: np.ndarray, candidates: np.ndarray | None = None) -> np.ndarray:
    """Ranks `(n,)` of the target among sampled candidates: `scores` `(n, 1 + num_negatives)`
    with the target's score in column 0. With `candidates` (the same shape, item indices), a
    target that is padding or OOV ranks `inf`."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"expected scores (n, 1 + num_negatives), got shape {scores.shape}.")
    ranks = 1.0 + (scores[:, 1:] >= scores[:, :1]).sum(axis=1)
    if candidates is not None:
        ranks = np.where(np.asarray(candidates)[:, 0] >= FIRST_ITEM, ranks, np.inf)
    return ranks


def hit_rate(ranks: np.ndarray, k: int) -> float:
    """HR@k: the fraction of targets ranked in the top k."""
    return float(np.mean(np.asarray(ranks) <= k))


def ndcg(ranks: np.ndarray, k: int) -> float:
    """NDCG@k with one relevant item: mean of 1 / log2(rank + 1) over targets in the top k."""
    ranks = np.asarray(ranks, dtype=np.float64)
    return float(np.mean(np.where(ranks <= k, 1.0 / np.log2(np.minimum(ranks, k) + 1.0), 0.0)))


def mrr(ranks: np.ndarray) -> float:
    """Mean reciprocal rank (an unrankable target counts 0)."""
    return float(np.mean(1.0 / np.asarray(ranks, dtype=np.float64)))


def ranking_metrics(ranks: np.ndarray, ks: Sequence[int] = (10,)) -> dict[str, float]:
    """`{"HR@k": ..., "NDCG@k": ... for each k, "MRR": ...}` from ranks `(n,)`."""
    if len(ranks) == 0:
        raise ValueError("no ranks to average (0 examples).")
    metrics = {}
    for k in ks:
        metrics[f"HR@{k}"] = hit_rate(ranks, k)
        metrics[f"NDCG@{k}"] = ndcg(ranks, k)
    metrics["MRR"] = mrr(ranks)
    return metrics


def scoring_rows(vocabulary_size: int, max_scores: int = MAX_SCORES) -> int:
    """How many users to score at once so that at most `max_scores` scores are held (at most 1024)."""
    return int(min(1024, max(1, max_scores // max(vocabulary_size, 1))))


def evaluate_scores(score: Callable[[np.ndarray], np.ndarray], history: np.ndarray, targets: np.ndarray,
                    seen: Sequence[np.ndarray] | None = None, negatives: np.ndarray | None = None,
                    ks: Sequence[int] = (10,), rows: int = 256) -> dict[str, dict[str, float]]:
    """Both protocols for users scored `rows` at a time by `score`: histories `(b, length)` ->
    scores `(b, vocabulary_size)`. Memory is bounded by `rows * vocabulary_size` scores, never a
    `(users, items)` matrix (`scoring_rows` picks `rows` for a budget).

    `"full"`: ranking over all items, the `seen` items excluded when given (pass None for
    data where users repeat items); `"sampled"` (with `negatives` `(n, num_negatives)`): ranking
    of the target among itself and its negatives.
    """
    targets = np.asarray(targets)
    full, sampled = [], []
    for start in range(0, len(targets), rows):
        part = slice(start, start + rows)
        scores = np.asarray(score(np.asarray(history)[part]), np.float32)
        full.append(full_ranking_ranks(scores, targets[part], None if seen is None else seen[part]))
        if negatives is not None:
            candidates = np.concatenate([targets[part, None], negatives[part]], axis=1)
            sampled.append(sampled_ranks(np.take_along_axis(scores, candidates, axis=1), candidates))
    results = {"full": ranking_metrics(np.concatenate(full or [np.zeros(0)]), ks)}
    if negatives is not None:
        results["sampled"] = ranking_metrics(np.concatenate(sampled or [np.zeros(0)]), ks)
    return results


class MostPopular:
    """Scores every item by its number of events in the training sequences."""

    def __init__(self, vocabulary_size: int):
        self.vocabulary_size = vocabulary_size
        self.counts = np.zeros(vocabulary_size, np.float32)

    def fit(self, sequences: Iterable[np.ndarray]) -> MostPopular:
        """`sequences`: item index arrays (padding and OOV are ignored)."""
        items = np.concatenate([np.asarray(s, np.int64) for s in sequences] or [np.zeros(0, np.int64)])
        self.counts = np.bincount(items, minlength=self.vocabulary_size).astype(np.float32)
        self.counts[:FIRST_ITEM] = 0.0
        return self

    def score(self, history: np.ndarray) -> np.ndarray:
        """The same popularity scores `(n, vocabulary_size)` for each history `(n, length)`."""
        return np.broadcast_to(self.counts, (len(history), self.vocabulary_size)).copy()


class ItemCooccurrence:
    """Scores items by their co-occurrence counts with the user's `recent` latest items.

    Two items co-occur when they are in the same training sequence, at most `window`
    positions apart (`None`: anywhere in it). The counts are a sparse `(items, items)` matrix
    (`counts`, scipy CSR). Popularity, scaled below one count, breaks ties.
    """

    def __init__(self, vocabulary_size: int, window: int | None = 3, recent: int = 5):
        if recent < 1 or (window is not None and window < 1):
            raise ValueError(f"recent and window must be >= 1; got recent={recent}, window={window}.")
        self.vocabulary_size = vocabulary_size
        self.window = window
        self.recent = recent
        self.counts = scipy.sparse.csr_matrix((vocabulary_size, vocabulary_size), dtype=np.float32)
        self.popularity = MostPopular(vocabulary_size)

    def fit(self, sequences: Iterable[np.ndarray]) -> ItemCooccurrence:
        """`sequences`: item index arrays, oldest first."""
        sequences = [np.asarray(s, np.int64) for s in sequences]
        size = self.vocabulary_size
        items = np.concatenate(sequences or [np.zeros(0, np.int64)])
        owners = np.repeat(np.arange(len(sequences)), [len(s) for s in sequences])
        if self.window is None:
            users = scipy.sparse.csr_matrix((np.ones(len(items), np.float32), (owners, items)),
                                            shape=(len(sequences), size))
            users.data[:] = 1.0
            counts = (users.T @ users).tocsr()
            counts.setdiag(0.0)
        else:
            pairs = []
            for offset in range(1, self.window + 1):
                same = owners[:-offset] == owners[offset:]
                first, second = items[:-offset][same], items[offset:][same]
                pairs += [(first, second), (second, first)]
            rows = np.concatenate([p[0] for p in pairs] or [np.zeros(0, np.int64)])
            columns = np.concatenate([p[1] for p in pairs] or [np.zeros(0, np.int64)])
            counts = scipy.sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, columns)), shape=(size, size))
        keep = scipy.sparse.diags((np.arange(size) >= FIRST_ITEM).astype(np.float32))
        self.counts = (keep @ counts @ keep).tocsr().astype(np.float32)
        self.counts.eliminate_zeros()
        self.popularity.fit(sequences)
        return self

    def score(self, history: np.ndarray) -> np.ndarray:
        """Scores `(n, vocabulary_size)` for left-padded histories `(n, length)`."""
        history = np.asarray(history, np.int64)
        popularity = self.popularity.counts
        scores = np.broadcast_to(popularity / (popularity.max() + 1.0), (len(history), self.vocabulary_size)).copy()
        for column in range(1, min(self.recent, history.shape[1]) + 1):
            items = history[:, -column]
            scores += self.counts[np.where(items >= FIRST_ITEM, items, 0)].toarray()
        return scores
