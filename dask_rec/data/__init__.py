"""Data: ingest, the interaction store (reader and writer), vocabularies, atomic directories,
synthetic logs and the row blocks every stage reads.
"""
