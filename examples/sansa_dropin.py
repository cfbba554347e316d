"""For users of the reference ``sansa`` package: the same names, in one process, no cluster needed.

    python examples/sansa_dropin.py [--users 3000 --items 1000]

Replace ``import sansa`` with ``import dask_rec as sansa``: SANSAConfig, the factorizer and inverter
configs, SANSA.fit / weights / load_weights / forward / recommend keep their names. Differences:
recommend never returns masked (seen) items and pads users with fewer than k candidates with
id -1 / score -inf instead of crashing; forward returns a dense array.
"""

import argparse

import numpy as np
import scipy.sparse as sp

import dask_rec as sansa  # the drop-in
from dask_rec.data.synthetic import make_interactions


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=3000)
    p.add_argument("--items", type=int, default=1000)
    args = p.parse_args(argv)
    frame = make_interactions(args.users, args.items, args.users * 30, seed=0)
    X = sp.csr_matrix((np.ones(len(frame), np.float32), (frame.user_id, frame.item_id)),
                      shape=(args.users, args.items))
    X.data[:] = 1.0

    config = sansa.SANSAConfig(
        l2=20.0,
        weight_matrix_density=5e-2,
        gramian_factorizer_config=sansa.ICFGramianFactorizerConfig(
            factorization_shift_step=1e-3, factorization_shift_multiplier=2.0),
        lower_triangle_inverter_config=sansa.UMRUnitLowerTriangleInverterConfig(scans=3, finetune_steps=10),
    )
    model = sansa.SANSA(config).fit(X)
    W1, W2 = model.weights
    print(f"weights: W1 {W1.shape} nnz={W1.nnz}, W2 {W2.shape} nnz={W2.nnz}")
    ids, scores = model.recommend(X[:5], k=10, mask_input=True)
    print("top-10 of the first 5 users:\n", ids)
    # weights trained elsewhere (e.g. by the reference package) load the same way
    twin = sansa.SANSA(config).load_weights((W1, W2))
    assert np.array_equal(twin.recommend(X[:5], k=10)[0], ids)
    return ids, scores


if __name__ == "__main__":
    main()
