"""The serving stage: HTTP API, dashboard assets and the durable event log."""
