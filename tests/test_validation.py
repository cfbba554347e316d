import numpy as np
import pytest
import scipy.sparse as sp

from dask_rec.validation import check_interactions, check_k, check_n_items


def test_accepts_dense_and_sparse_and_returns_float32_csr():
    X = check_interactions(np.array([[0, 1], [2, 0]]))
    assert X.format == "csr" and X.dtype == np.float32 and X.nnz == 2


@pytest.mark.parametrize("bad,err,match", [
    ([[1, 0]], TypeError, "scipy.sparse matrix or a 2-D numpy array"),
    (np.ones(3), ValueError, "must be 2-D"),
    (np.array([["a"]]), TypeError, "real numbers"),
    (sp.csr_matrix((0, 5)), ValueError, "empty"),
    (sp.csr_matrix((3, 5)), ValueError, "no interactions"),
])
def test_bad_shapes_and_types(bad, err, match):
    with pytest.raises(err, match=match):
        check_interactions(bad)


def test_nan_and_negative_values_are_located():
    X = sp.csr_matrix(np.array([[0, 1.0], [np.nan, 0]]))
    with pytest.raises(ValueError, match=r"1 NaN or infinite value\(s\), e.g. nan at row 1, column 0"):
        check_interactions(X)
    X = sp.csr_matrix(np.array([[0, 1.0], [0, -3.0]]))
    with pytest.raises(ValueError, match=r"negative value\(s\), e.g. -3.0 at row 1, column 1"):
        check_interactions(X)
    with pytest.raises(ValueError, match="infinite"):
        check_interactions(np.array([[np.inf, 1.0]]))


def test_duplicates_are_summed():
    X = sp.csr_matrix((np.ones(2), np.array([1, 1]), np.array([0, 2])), shape=(1, 3))
    out = check_interactions(X)
    assert out.nnz == 1 and out[0, 1] == 2


@pytest.mark.parametrize("k", [0, -3, 2.5, True, "5"])
def test_k_must_be_a_positive_int(k):
    with pytest.raises(ValueError, match="k must be a positive integer"):
        check_k(k)


def test_item_count_mismatch_is_named():
    with pytest.raises(ValueError, match="has 3 item columns but the model was trained on 4 items"):
        check_n_items(sp.csr_matrix((2, 3)), 4)


def test_check_int_accepts_integers_at_or_above_the_bound():
    import numpy as np

    from dask_rec.validation import check_int

    assert check_int(3, "n") == 3 and check_int(np.int64(0), "n", 0) == 0
    assert type(check_int(np.int32(5), "n")) is int
    for bad in (0, -1, 2.0, True, "3", None):
        with pytest.raises(ValueError, match=r"n must be an integer >= 1; got "):
            check_int(bad, "n")
