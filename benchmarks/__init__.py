"""Benchmarks of keras_mtl: ratios of two runs measured side by side in one process.

Run `python benchmarks/run.py` (or `--quick`); see `benchmarks/run.py` for what
each part measures.
"""
