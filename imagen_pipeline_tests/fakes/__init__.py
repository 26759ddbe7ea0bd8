"""Loopback servers that speak the real HTTP protocols of external services."""
