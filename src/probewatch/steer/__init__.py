"""Interventions on the residual stream: adding vectors (steering) at named sites."""

from probewatch.steer.hooks import add_vector

__all__ = ["add_vector"]
