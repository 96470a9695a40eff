"""Tiny-model comparisons run on one torch thread (see tests/one_thread.py)."""

from tests.one_thread import one_thread

__all__ = ["one_thread"]
