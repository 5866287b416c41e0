"""Test scaffolding: writers of tiny checkpoints in the official layouts.

Used by the tests, the demo and the benchmarks; the model core (``sa2va_ros.model``) never
imports this package.
"""
