"""Serving and evaluation: batch recommendation and metrics as user-block tasks, and the scorer
contract they share.
"""
