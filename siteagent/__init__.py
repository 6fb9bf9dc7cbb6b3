"""Meridian site agent (docstring pending)."""
