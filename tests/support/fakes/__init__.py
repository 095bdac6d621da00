"""Local stand-in servers for tests (loopback only)."""
