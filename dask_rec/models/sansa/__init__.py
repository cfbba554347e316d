"""SANSA: the estimator (model.py), its fit's driver (training.py) and its stages: the factorization
of the Gramian (factorize.py) and the approximate inverse of the factor (invert.py).
"""
