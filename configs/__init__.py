"""Bundled model configurations (package data: found after a plain ``pip install .``)."""
