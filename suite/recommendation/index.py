"""Approximate top-k over the item embeddings (faiss HNSW), for catalogues where exact search is slow.

Optional: `pip install 'transformer-suite[ann]'`. Exports never use it; their top-k stays exact.
"""

from __future__ import annotations

import numpy as np

from suite.recommendation.model import FIRST_ITEM


class ApproximateIndex:
    """Maximum-inner-product search over the items' embeddings `(vocabulary_size, d_model)` (padding
    and OOV rows are left out) with a faiss HNSW graph: `neighbours` links per node, `ef_search`
    candidates kept while searching (higher: better recall, slower)."""

    def __init__(self, embeddings: np.ndarray, neighbours: int = 32, ef_construction: int = 200, ef_search: int = 128):
        try:
            import faiss
        except ImportError as error:
            raise ImportError("the approximate index needs faiss: pip install 'transformer-suite[ann]' "
                              "(or faiss-cpu).") from error
        embeddings = np.ascontiguousarray(embeddings[FIRST_ITEM:], np.float32)
        if embeddings.ndim != 2 or not len(embeddings):
            raise ValueError(f"embeddings must be (vocabulary_size, d_model) with items; got shape {embeddings.shape}.")
        self.index = faiss.IndexHNSWFlat(embeddings.shape[1], neighbours, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = ef_construction
        self.index.hnsw.efSearch = ef_search
        self.index.add(embeddings)
        self.items = len(embeddings)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The (about) `k` best items for each query `(n, d_model)`: `(scores (n, k) float32,
        indices (n, k) int32)` best first, vocabulary indices; -1 and -inf where fewer were found."""
        k = min(k, self.items)
        scores, found = self.index.search(np.ascontiguousarray(queries, np.float32), k)
        return scores.astype(np.float32), np.where(found >= 0, found + FIRST_ITEM, -1).astype(np.int32)
