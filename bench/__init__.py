"""Benchmarks of lorabot: `python -m bench` (see docs/benchmarks.md).

These are measurements, not tests: every figure is printed beside a baseline measured in the
same run, and nothing here asserts on timing.
"""
