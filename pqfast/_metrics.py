"""Metric constants, with faiss's values."""

METRIC_INNER_PRODUCT = 0
METRIC_L2 = 1
