"""In-process runners: whole rounds (SecAgg+, CKKS, over the real service) in one process.

Used by `fedveil simulate-secagg`, the audit's composition root (aggregators.py), the
demo, benchmarks and tests; no command-line parsing here.
"""
