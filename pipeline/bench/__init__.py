"""Serving-performance measurement: streamed requests, per-request samples, load shapes, summaries.

Definitions (stated once here, in docs/METRICS.md, and in the docstrings of `stats`):
TTFT = send -> first chunk carrying content; TPOT = (E2E - TTFT) / (N - 1) with N from
`usage.completion_tokens`; ITL = gap between consecutive content chunks; E2E = send -> end of stream.
"""
