"""`python -m reconciler`: the same entry point as the `reconcile` console script."""

from reconciler.cli import entry_point

entry_point()
