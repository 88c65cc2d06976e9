"""The test set: every label of every face, in ``test/labels.parquet``, and ``test.toml``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from omnifer.artifacts import atomic_write_bytes
from omnifer.labels import EXPRESSIONS
from omnifer.synth.config import SynthConfig
from omnifer.synth.faces import N_AUS
from omnifer.synth.tables import au_columns, concat, schema_meta, toml_database, write_parquet


def write_test_set(out: Path, config: SynthConfig, chunks: list[dict],
                   id_offset: int) -> dict[str, int]:
    """Write the test labels (identities numbered from ``id_offset``); return ``{"test": n}``."""
    import pyarrow as pa

    au = concat(chunks, "au") if chunks else np.zeros((0, N_AUS))
    cols = {
        "image": pa.array([Path(f).relative_to("test").as_posix()
                           for f in (concat(chunks, "file") if chunks else [])], pa.string()),
        "expression": pa.array([EXPRESSIONS[int(c)]
                                for c in (concat(chunks, "expression") if chunks else [])],
                               pa.string()),
        "valence": pa.array(concat(chunks, "valence").astype(np.float32) if chunks else [],
                            pa.float32()),
        "arousal": pa.array(concat(chunks, "arousal").astype(np.float32) if chunks else [],
                            pa.float32()),
        **au_columns(au.reshape(-1, N_AUS), config.au_threshold),
        "identity": pa.array((concat(chunks, "identity") + id_offset).astype(np.int32)
                             if chunks else [], pa.int32()),
    }
    write_parquet(out / "test/labels.parquet",
                  pa.table(cols).replace_schema_metadata(schema_meta()))
    test = ("# omnifer synthetic benchmark: test set with every label\n"
            'on_bad_files = "error"\n\n'
            + toml_database("synth-test", "test/labels.parquet", "parquet",
                            ["expression", "va", "au"]))
    atomic_write_bytes(out / "test.toml", test.encode())
    return {"test": config.n_test}
