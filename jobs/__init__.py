"""Ray job entrypoints: ``ray job submit --address ... --working-dir . -- python -m jobs.<stage> ...``."""
