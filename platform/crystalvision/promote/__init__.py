"""A logged run's model evaluated, gated against the champion and registered (challenger, champion)."""
