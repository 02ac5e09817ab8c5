"""Prometheus exporter for the projects of an OpenAI organization."""

__version__ = "0.1.0"
