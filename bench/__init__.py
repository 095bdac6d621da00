"""Benchmarks: each module runs as a script (`venv/bin/python bench/<name>.py`); measured, not unit-tested."""
