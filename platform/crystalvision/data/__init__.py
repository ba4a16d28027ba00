"""Data: materials from the Materials Project, versioned snapshots, object storage, image shards, splits and folds.

The snapshots shipped with the package live here too (``snapshots/``, see :data:`crystalvision.core.settings.SNAPSHOTS_DIR`)."""
