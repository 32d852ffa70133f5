"""Scripts beside the library: benchmarks, the paper reproduction and the documentation figures.

Run them as modules from the repository root, e.g. ``python -m experiments.benchmarks.bench_sampler --help``.
"""
