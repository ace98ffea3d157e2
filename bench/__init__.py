"""Benchmarks: each script compares litwatch with a bare baseline in the same run.

Run them from the repository root, for example ``python -m bench.ingest_pubmed --articles
20000``; each prints its figures and writes them as JSON under ``bench/results/``. See
docs/benchmarks.md for the latest numbers and how they were taken.
"""
