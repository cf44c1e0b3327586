"""Threshold filter: marks rows ``kept`` instead of dropping them, so rejected rows stay counted."""

from __future__ import annotations

import pyarrow as pa


def apply_threshold(batch: pa.Table, threshold: float, on: str) -> pa.Table:
    values = batch.column(on).to_pylist()
    errors = batch.column("error").to_pylist()
    kept = [not err and v is not None and float(v) >= threshold for v, err in zip(values, errors, strict=True)]
    return batch.append_column("kept", pa.array(kept, pa.bool_()))
