"""Stages several models share: item counts, the Gramian (and its column blocks on disk) and the
user blocks that serving, evaluation and ALS's user solves run on.
"""
