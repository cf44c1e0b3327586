"""Gates: mark each row ``kept`` or not, never drop it, so rejected rows stay counted."""

from __future__ import annotations

import pyarrow as pa

from pipeline.columns import ERROR, KEPT


def apply_threshold(batch: pa.Table, threshold: float, on: str) -> pa.Table:
    values = batch.column(on).to_pylist()
    errors = batch.column(ERROR).to_pylist()
    kept = [err is None and v is not None and float(v) >= threshold for v, err in zip(values, errors, strict=True)]
    return batch.append_column(KEPT, pa.array(kept, pa.bool_()))
