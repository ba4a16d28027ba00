"""Shared leaves: settings, pipeline configuration, targets, errors, logging, progress events, native-library order."""
