"""``dask_rec.tune``: hyper-parameter search with shared-Gramian trials (search.py), the search
spaces (space.py) and the results (result.py).
"""
