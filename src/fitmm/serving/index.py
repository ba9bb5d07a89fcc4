"""Top-k retrieval over exported vectors: exact (every item scored) or approximate (FAISS HNSW).

Both answer the same questions with the same exclusions:

- a known user's top-k: query = the user's vector, the user's training items excluded (or none);
- a new user's top-k from a few items: query = the fold-in vector (``fitmm.retrieval.fold_in``:
  the mean of those items' vectors), those items excluded;
- an item's most similar items: cosine similarity of item vectors, the item itself excluded
  (always exact: one matrix–vector product).

The exact index ranks through ``fitmm.evaluation.rank_excluding``, the routine the evaluator and
``fitmm recommend`` use, so its answers equal theirs. The HNSW index searches with a FAISS
selector that skips the excluded items, so it also returns k items that are not excluded.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from fitmm.errors import MissingExtraError
from fitmm.evaluation import rank_excluding
from fitmm.retrieval import fold_in

_MISSING_SERVE_EXTRA = "serving needs the optional extra: pip install 'fitmm[serve]'"


def faiss_module():
    """The ``faiss`` module, or MissingExtraError naming the extra that brings it."""
    try:
        import faiss
    except ImportError:
        raise MissingExtraError(_MISSING_SERVE_EXTRA) from None
    return faiss


def augment_items(item_vectors: np.ndarray) -> np.ndarray:
    """Items x → [x, √(Φ² − ‖x‖²)] with Φ the largest norm: for queries q → [q, 0], the largest inner
    product q·x is the smallest Euclidean distance (the usual reduction of inner-product search to
    nearest neighbours, on which HNSW graphs are built far better than on the inner product)."""
    vectors = np.asarray(item_vectors, dtype=np.float64)
    squared = np.square(vectors).sum(axis=1)
    extra = np.sqrt(np.maximum(squared.max() - squared, 0.0))
    return np.ascontiguousarray(np.hstack([vectors, extra[:, None]]), dtype=np.float32)


def build_hnsw(item_vectors: np.ndarray, parameters: dict):
    """A FAISS HNSW index (Euclidean) of the augmented item vectors (``augment_items``); ``parameters``:
    M, ef_construction, ef_search."""
    faiss = faiss_module()
    augmented = augment_items(item_vectors)
    index = faiss.IndexHNSWFlat(augmented.shape[1], parameters["M"])
    index.hnsw.efConstruction = parameters["ef_construction"]
    index.add(augmented)
    index.hnsw.efSearch = parameters["ef_search"]
    return index


def csr_rows(lists: list[np.ndarray], n_columns: int) -> sp.csr_matrix:
    """A CSR matrix with one row per list of column indices (the items to exclude per query)."""
    indptr = np.concatenate([[0], np.cumsum([len(values) for values in lists])]).astype(np.int64)
    indices = np.concatenate(lists).astype(np.int64) if lists else np.zeros(0, dtype=np.int64)
    return sp.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr), shape=(len(lists), n_columns))


class ExactIndex:
    """Scores every item for every query: the model's own ranking."""

    def __init__(self, item_vectors: np.ndarray) -> None:
        self.item_vectors = item_vectors

    def search(self, queries: np.ndarray, excluded: sp.csr_matrix, rows: np.ndarray,
               k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query: (item indices, scores) best first, at most k, none of the items in its row of
        ``excluded`` (query q's row is ``rows[q]``)."""
        scores = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32) @ self.item_vectors.T)
        ranked, values, lengths = rank_excluding(scores, rows, [excluded], k)
        ranked, values = ranked.numpy(), values.numpy()
        return [(ranked[row, :length], values[row, :length]) for row, length in enumerate(lengths.tolist())]


class HnswIndex:
    """Approximate top-k by inner product over a FAISS HNSW graph of the item vectors; the scores
    returned are the exact inner products of the items found."""

    def __init__(self, item_vectors: np.ndarray, parameters: dict) -> None:
        self.faiss = faiss_module()
        self.item_vectors = item_vectors
        self.index = build_hnsw(item_vectors, parameters)
        self.ef_search = parameters["ef_search"]

    def search(self, queries: np.ndarray, excluded: sp.csr_matrix, rows: np.ndarray,
               k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        augmented = np.ascontiguousarray(np.hstack([queries, np.zeros((len(queries), 1), np.float32)]))
        for row, excluded_row in enumerate(rows):
            skipped = excluded.indices[excluded.indptr[excluded_row]:excluded.indptr[excluded_row + 1]].astype(np.int64)
            parameters = self.faiss.SearchParametersHNSW()
            parameters.efSearch = max(self.ef_search, k)
            if skipped.size:
                selector = self.faiss.IDSelectorBatch(skipped)
                keep = self.faiss.IDSelectorNot(selector)
                parameters.sel = keep
            _, items = self.index.search(augmented[row:row + 1], k, params=parameters)
            found = items[0][items[0] >= 0]
            out.append((found, self.item_vectors[found] @ queries[row]))
        return out


class Retriever:
    """What a server answers from: an export's vectors, IDs and training items behind one index."""

    def __init__(self, user_vectors: np.ndarray, item_vectors: np.ndarray, train_items: sp.csr_matrix,
                 index: ExactIndex | HnswIndex) -> None:
        self.user_vectors = user_vectors
        self.item_vectors = item_vectors
        self.train_items = train_items
        self.index = index
        norms = np.linalg.norm(item_vectors, axis=1, keepdims=True)
        self.unit_items = (item_vectors / np.maximum(norms, 1e-12)).astype(np.float32)

    def for_users(self, users: np.ndarray, k: int, exclude_train: bool) -> list[tuple[np.ndarray, np.ndarray]]:
        """Top-k of known users (internal IDs)."""
        if exclude_train:
            return self.index.search(self.user_vectors[users], self.train_items, users, k)
        nothing = csr_rows([np.zeros(0, dtype=np.int64)], self.train_items.shape[1])
        return self.index.search(self.user_vectors[users], nothing, np.zeros(len(users), dtype=np.int64), k)

    def for_new_users(self, seeds: list[np.ndarray], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Top-k of new users given by the items they interacted with (internal IDs), those items excluded."""
        queries = fold_in(self.item_vectors, seeds)
        return self.index.search(queries, csr_rows(seeds, self.train_items.shape[1]), np.arange(len(seeds)), k)

    def similar_items(self, item: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k items whose vectors are most cosine-similar to ``item``'s, itself excluded."""
        scores = torch.from_numpy(self.unit_items @ self.unit_items[item])
        ranked, values, lengths = rank_excluding(scores.unsqueeze(0), np.zeros(1, dtype=np.int64),
                                                 [csr_rows([np.array([item])], len(scores))], k)
        return ranked[0, :lengths[0]].numpy(), values[0, :lengths[0]].numpy()
