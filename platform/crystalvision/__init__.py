"""crystalvision: learn material properties from rendered images of crystal structures."""

__version__ = "0.1.0"
