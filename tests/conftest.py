"""Shared fixtures: the loopback Kubernetes API and a real Prometheus server."""

pytest_plugins = ["tests.fakekube.fixtures", "tests.promharness.fixtures"]
