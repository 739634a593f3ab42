"""Benchmarks: fexstack's build against the dnf5 --installroot baseline and the physical floor.

See ``benchmarks/build_bench.py`` (the measuring script) and ``benchmarks/scale.py`` (the
deterministic scale repository it builds on).
"""
