"""Podium helpers importable without Django settings (the client, the fake upstream)."""
