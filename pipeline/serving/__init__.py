"""Serving systems: per-server profiles and what they imply for metrics, manifests and dashboards."""
