"""netrazor benchmarks: each script writes JSON records; render.py builds RESULTS.md from them."""
