"""Data: materials from the Materials Project, versioned snapshots, object storage, image shards, splits and folds.

The snapshots shipped with the package live here too, in ``snapshots/`` (``settings.SNAPSHOTS_DIR``).
"""
