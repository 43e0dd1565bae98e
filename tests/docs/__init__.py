"""Test package (so helpers import as ``tests.support``)."""
