"""realign: arrays that reach a worker at an odd address are copied to an aligned one, once."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from dask_rec.serving.scorers import ALIGNMENT, WeightsScorer, realign


def _misaligned(values: np.ndarray) -> np.ndarray:
    """A copy of ``values`` that starts 1 byte past an aligned address (as a received frame can)."""
    raw = np.zeros(values.nbytes + ALIGNMENT + 1, np.uint8)
    start = (-raw.ctypes.data) % ALIGNMENT + 1
    out = raw[start:start + values.nbytes].view(values.dtype).reshape(values.shape)
    out[...] = values
    assert out.ctypes.data % ALIGNMENT == 1
    return out


class _Holder:
    def __init__(self, factors, weights, pair):
        self.factors, self.weights, self.pair, self.name = factors, weights, pair, "x"


def test_misaligned_arrays_are_copied_aligned_and_equal():
    rng = np.random.default_rng(0)
    factors = rng.random((50, 8), dtype=np.float32)
    W = sp.random(30, 30, density=0.2, format="csr", random_state=1, dtype=np.float32)
    bad_W = sp.csr_matrix((_misaligned(W.data), _misaligned(W.indices), _misaligned(W.indptr)), shape=W.shape)
    holder = _Holder(_misaligned(factors), bad_W, (_misaligned(factors[:3]), 7))
    shared = realign((holder, _misaligned(np.arange(5))), depth=3)
    assert shared[0] is holder  # fixed in place: the worker keeps the fixed object
    for a in (holder.factors, holder.weights.data, holder.weights.indices, holder.weights.indptr,
              holder.pair[0], shared[1]):
        assert a.ctypes.data % ALIGNMENT == 0
    np.testing.assert_array_equal(holder.factors, factors)
    np.testing.assert_array_equal(holder.weights.toarray(), W.toarray())
    np.testing.assert_array_equal(holder.pair[0], factors[:3])
    np.testing.assert_array_equal(shared[1], np.arange(5))


def test_aligned_arrays_are_left_alone():
    W = sp.identity(4, format="csr", dtype=np.float32)
    scorer = WeightsScorer(W, W)
    data = W.data
    assert realign(scorer) is scorer and scorer.W1.data is data
    a = np.ones(8)
    assert realign(a) is a
