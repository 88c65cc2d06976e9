"""The pool's hidden ground truth, ``pool_truth.parquet`` (outside ``pool/``): kind, classes
(two for blends), valence/arousal, AUs, identity and domain of every pool image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from omnifer.labels import EXPRESSIONS
from omnifer.synth.config import SynthConfig
from omnifer.synth.faces import N_AUS
from omnifer.synth.sampling import POOL_KINDS
from omnifer.synth.tables import au_columns, concat, schema_meta, write_parquet


def write_pool_truth(out: Path, config: SynthConfig, chunks: list[dict],
                     id_offset: int) -> dict[str, int]:
    """Write the pool truth (identities numbered from ``id_offset``); return the pool count
    and the count per kind (``pool_face``, ``pool_nonface``, ...)."""
    import pyarrow as pa

    if chunks:
        files = [Path(f).relative_to("pool").as_posix() for f in concat(chunks, "file")]
        kind = concat(chunks, "kind")
        expr, expr2 = concat(chunks, "expression"), concat(chunks, "expression2")
        blend, val = concat(chunks, "blend"), concat(chunks, "valence")
        aro = concat(chunks, "arousal")
        au, ident = concat(chunks, "au"), concat(chunks, "identity")
    else:
        files, kind = [], np.zeros(0, int)
        expr = expr2 = ident = np.zeros(0, int)
        blend = val = aro = np.zeros(0)
        au = np.zeros((0, N_AUS))
    nonface = kind == 1
    is_blend = kind == 3
    domain = "shifted" if config.domain_shift else "source"
    cols = {
        "file": pa.array(files, pa.string()),
        "kind": pa.array([POOL_KINDS[k] for k in kind], pa.string()),
        "expression": pa.array(expr.astype(np.int16), mask=nonface),
        "expression_name": pa.array([EXPRESSIONS[c] for c in expr], pa.string(), mask=nonface),
        "expression2": pa.array(np.where(is_blend, expr2, 0).astype(np.int16), mask=~is_blend),
        "blend": pa.array(blend.astype(np.float32), mask=nonface),
        "valence": pa.array(val.astype(np.float32), mask=nonface),
        "arousal": pa.array(aro.astype(np.float32), mask=nonface),
        **au_columns(au.reshape(-1, N_AUS), config.au_threshold, present=~nonface),
        "identity": pa.array((ident + id_offset).astype(np.int32), mask=nonface),
        "domain": pa.array([domain] * len(files), pa.string()),
    }
    write_parquet(out / "pool_truth.parquet", pa.table(cols).replace_schema_metadata(
        schema_meta({"omnifer.pool_kinds": json.dumps(list(POOL_KINDS))})))
    return {"pool": config.n_pool,
            **{f"pool_{k}": int((kind == i).sum()) for i, k in enumerate(POOL_KINDS)}}
