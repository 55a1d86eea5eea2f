"""Benchmarks of pqfast against faiss and nanopq: ``python -m benchmarks --quick``.

Modules: `datasets` (data loading), `groundtruth` (exact search, cache,
recall), `libraries` (adapters), `config` (presets and sweep), `runners`
(measurement protocol), `report` (tables, JSON, markdown), `plots` (PNGs).
"""
