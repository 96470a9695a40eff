"""Metrics and evaluation of probes."""
