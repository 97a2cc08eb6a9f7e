"""`Rows`: a compressed sparse row matrix as three numpy arrays, what a node reads per shopper.

The fitted state of every tier (users × items counts, TIFU-KNN vectors, stock) is row-sparse and a
node only ever reads whole rows of it, so plain arrays are enough: loading SciPy on a node costs
~23 MB of its memory for nothing it needs. Fitting code that multiplies matrices converts with
`to_scipy()` (SciPy is imported there, never on a node).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Rows:
    """Row r's columns are indices[indptr[r]:indptr[r+1]] (sorted), with values data[…] there.

    indptr: (n_rows + 1,) int64; indices: (nnz,) int32; data: (nnz,); shape: (n_rows, n_columns).
    """

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    shape: tuple[int, int]

    @classmethod
    def from_entries(cls, rows: np.ndarray, columns: np.ndarray, values: np.ndarray, shape: tuple[int, int]) -> Rows:
        """From (row, column, value) entries in any order; repeated (row, column) values are summed."""
        rows, columns = np.asarray(rows, np.int64), np.asarray(columns, np.int64)
        keys = rows * shape[1] + columns
        unique, inverse = np.unique(keys, return_inverse=True)
        summed = np.bincount(inverse, weights=np.asarray(values, np.float64), minlength=len(unique))
        indptr = np.r_[0, np.cumsum(np.bincount(unique // shape[1], minlength=shape[0]))].astype(np.int64)
        return cls(indptr, (unique % shape[1]).astype(np.int32), summed.astype(np.asarray(values).dtype), tuple(shape))

    @classmethod
    def from_scipy(cls, matrix) -> Rows:
        matrix = matrix.tocsr()
        matrix.sort_indices()
        return cls(matrix.indptr.astype(np.int64), matrix.indices, matrix.data, tuple(matrix.shape))

    def sorted(self) -> Rows:
        """The same matrix with each row's columns in ascending order (what `row` promises): itself
        when they already are (e.g. memory-mapped from a bundle, which stays unread)."""
        falls = np.flatnonzero(np.diff(self.indices) <= 0) + 1  # positions not above their predecessor
        if np.isin(falls, self.indptr).all():  # only where a new row starts
            return self
        order = np.lexsort((self.indices, self.row_ids()))
        return Rows(self.indptr, self.indices[order], self.data[order], self.shape)

    def row_ids(self) -> np.ndarray:
        """(nnz,) the row of each entry."""
        return np.repeat(np.arange(self.shape[0], dtype=np.int32), np.diff(self.indptr))

    @property
    def nnz(self) -> int:
        return len(self.indices)

    def row(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """(columns, values) of row `r`, sorted by column: views, not copies."""
        lo, hi = self.indptr[r], self.indptr[r + 1]
        return self.indices[lo:hi], self.data[lo:hi]

    def __getitem__(self, r: int) -> Rows:
        """Row `r` as a one-row matrix."""
        columns, values = self.row(int(r))
        return Rows(np.array([0, len(columns)], np.int64), columns, values, (1, self.shape[1]))

    def row_sums(self) -> np.ndarray:
        """(n_rows,) sum of each row's values."""
        return np.bincount(self.row_ids(), self.data, self.shape[0])

    def scale_rows(self, factors: np.ndarray) -> Rows:
        """Each row's values times its factor ((n_rows,))."""
        data = self.data * np.asarray(factors, self.data.dtype)[self.row_ids()]
        return Rows(self.indptr, self.indices, data, self.shape)

    def transpose(self) -> Rows:
        """The (n_columns, n_rows) matrix, its rows sorted by column."""
        order = np.argsort(self.indices, kind="stable")  # stable: each new row keeps rows in order
        indptr = np.r_[0, np.cumsum(np.bincount(self.indices, minlength=self.shape[1]))].astype(np.int64)
        return Rows(indptr, self.row_ids()[order], self.data[order], (self.shape[1], self.shape[0]))

    def toarray(self) -> np.ndarray:
        dense = np.zeros(self.shape, self.data.dtype)
        dense[self.row_ids(), self.indices] = self.data
        return dense

    def to_scipy(self):
        import scipy.sparse as sp

        return sp.csr_matrix((self.data, self.indices, self.indptr), shape=self.shape)


def row_positions(indptr: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Positions in a CSR matrix's indices/data of every entry of `rows`, row after row."""
    starts, ends = indptr[rows], indptr[np.asarray(rows) + 1]
    lengths = ends - starts
    offsets = np.repeat(starts - np.r_[0, np.cumsum(lengths)[:-1]], lengths)
    return offsets + np.arange(int(lengths.sum()))
