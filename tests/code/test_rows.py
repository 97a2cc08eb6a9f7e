"""`Rows` against SciPy's CSR on random matrices: what a node reads must equal what fitting built."""

import numpy as np
import scipy.sparse as sp

from models.rows import Rows, row_positions


def random_entries(seed: int, shape=(7, 11), n=40):
    rng = np.random.default_rng(seed)
    return rng.integers(0, shape[0], n), rng.integers(0, shape[1], n), rng.random(n).astype(np.float32), shape


def test_repeated_entries_are_summed_and_rows_are_sorted_as_in_scipy():
    for seed in range(5):
        rows, columns, values, shape = random_entries(seed)
        ours = Rows.from_entries(rows, columns, values, shape)
        theirs = sp.csr_matrix((values, (rows, columns)), shape=shape)
        np.testing.assert_allclose(ours.toarray(), theirs.toarray(), rtol=1e-6)
        assert ours.nnz == theirs.nnz and ours.data.dtype == np.float32
        for r in range(shape[0]):
            columns_of_r, _ = ours.row(r)
            assert (np.diff(columns_of_r) > 0).all()


def test_transpose_sums_sorted_and_one_row_views_match_scipy():
    rows, columns, values, shape = random_entries(7)
    ours, theirs = (
        Rows.from_entries(rows, columns, values, shape),
        sp.csr_matrix((values, (rows, columns)), shape=shape),
    )
    np.testing.assert_allclose(ours.transpose().toarray(), theirs.T.toarray(), rtol=1e-6)
    np.testing.assert_allclose(ours.row_sums(), np.asarray(theirs.sum(axis=1)).ravel(), rtol=1e-6)
    np.testing.assert_allclose(ours[3].toarray(), theirs[3].toarray(), rtol=1e-6)
    shuffled = Rows(ours.indptr, ours.indices.copy(), ours.data.copy(), ours.shape)
    for r in range(shape[0]):  # reverse every row: `sorted` restores ascending columns with their values
        lo, hi = shuffled.indptr[r], shuffled.indptr[r + 1]
        shuffled.indices[lo:hi], shuffled.data[lo:hi] = shuffled.indices[lo:hi][::-1], shuffled.data[lo:hi][::-1]
    restored = shuffled.sorted()
    assert restored.indices.tolist() == ours.indices.tolist() and restored.data.tolist() == ours.data.tolist()
    np.testing.assert_allclose(Rows.from_scipy(theirs).to_scipy().toarray(), theirs.toarray())


def test_row_positions_lists_every_entry_of_the_rows_in_order():
    indptr = np.array([0, 2, 2, 5, 6])
    assert row_positions(indptr, np.array([2, 0, 1, 3])).tolist() == [2, 3, 4, 0, 1, 5]
    assert row_positions(indptr, np.array([], dtype=int)).tolist() == []
