"""``audit``: likely label errors, near duplicates (across labeled databases and across
train/test) and outliers in the labeled data, from a trained model's embeddings."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from omnifer.errors import OmniferError
from omnifer.pipeline import resolve
from omnifer.pipeline.embeddings import image_cache, labeled_embeddings
from omnifer.pipeline.progress import Progress, bar
from omnifer.records import AuditRun

log = logging.getLogger(__name__)


def audit(workspace: Any = None, config: Any = None, *, data: Any = None, model: Any = None,
          test: Sequence[Any] | None = None, on_bad_files: str | None = None,
          progress: Progress | None = None) -> AuditRun:
    """Audit ``data`` (default: the data ``model`` was trained on, else the latest synth
    run's labeled set) with the embeddings of ``model`` (default: the latest train run): label
    issues and outliers from cross-fitted neighbours, near duplicates across its databases and
    with ``test`` (default: the latest synth run's test set; ``[]``: no train/test check). Writes ``audit.parquet``,
    ``audit.csv``, ``suspects.png`` and ``report.md`` into the run."""
    from omnifer.mining.audit import AuditConfig, audit as audit_faces, check_labels
    from omnifer.mining.audit_report import audit_table, summary_lines, write_outputs
    from omnifer.models import read_model_config

    ws = resolve.workspace(workspace)
    config = config or AuditConfig()
    if not isinstance(config, AuditConfig):
        raise OmniferError(f"config is a {type(config).__name__}; pass an AuditConfig")
    model_path = resolve.model_dir(ws, model)
    size = read_model_config(model_path).input_size
    if data is None:  # the model's own training data, else the latest synth run's
        data = resolve.recorded_data(ws, model_path, "train", "data")
    data_ref = resolve.synth_output(ws, data, "labeled")
    with bar(progress, "reading labeled data", "img") as update:
        labeled = resolve.read_data(ws, data_ref, on_bad_files=on_bad_files, progress=update)
    classes = labeled.expressions
    labels = labeled.table["expression"].fillna(-1).to_numpy(np.int64)
    check_labels(labels, len(classes), config)
    test_refs = list(test) if test is not None else _default_test(ws)
    with bar(progress, "reading evaluation data", "img") as update:
        held = [resolve.read_data(ws, ref, on_bad_files=on_bad_files, progress=update)
                for ref in test_refs]
    run_config = {"audit": dataclasses.asdict(config), "data": ws.portable(data_ref),
                  "test": [ws.portable(t) for t in test_refs], "model": ws.portable(model_path)}
    inputs = {"model": model_path, "data": data_ref,
              **{f"test_{i}": ref for i, ref in enumerate(test_refs)}}
    with ws.start_run("audit", config=run_config, inputs=inputs, seed=config.seed,
                      device=config.device, resume=False) as run:
        emb = labeled_embeddings(ws, labeled, model_path, config.device, progress=progress,
                                 what="embedding labeled faces")
        hashes = _hashes(labeled, size, ws, progress, "hashing labeled faces", mirrored=False)
        test_set = test_emb = test_hashes = None
        if held:
            from omnifer.data import combine

            test_set = combine(held) if len(held) > 1 else held[0]
            test_emb = np.concatenate([
                labeled_embeddings(ws, test_set, model_path, config.device, progress=progress,
                                   what="embedding evaluation faces", mirrored=mirrored)
                for mirrored in (False, True)])
            test_hashes = _hashes(test_set, size, ws, progress, "hashing evaluation faces",
                                  mirrored=True)
        with bar(progress, "auditing", "step") as update:
            update(0, 1)
            result = audit_faces(emb, labels, labeled.table["source"].to_numpy(),
                                 n_classes=len(classes), config=config, test=test_emb,
                                 hashes=hashes, test_hashes=test_hashes)
            update(1, 1)
        table = audit_table(result, labeled, classes, test=test_set)
        files = write_outputs(run.path, table, result, labeled, classes, config=config,
                              test=test_set,
                              inputs={"data": str(data_ref), "model": str(model_path),
                                      "test": ", ".join(map(str, test_refs)) or "none"})
        summary = summary_lines(result, config)
        run.complete(outputs=files, counts=result.counts, summary=summary,
                     outlier_cut=None if not np.isfinite(result.outlier_cut)
                     else result.outlier_cut)
    return AuditRun.from_run(run)


def _default_test(ws: Any) -> list[str]:
    """The latest synth run's test set; none (with a warning) when no synth run is known."""
    found = resolve.latest_test(ws)
    if not found:
        log.warning("no evaluation set known: train/test duplicates are not checked; pass "
                    "--test TEST_DATA")
    return found


def _hashes(data: Any, size: int, ws: Any, progress: Progress | None, what: str, *,
            mirrored: bool) -> np.ndarray:
    """Perceptual hashes of ``data``'s images at the model's input size (decoded once into the
    workspace's image cache, which the embeddings share)."""
    from omnifer.data.cache import decoded_images
    from omnifer.mining.leaks import image_hashes

    with bar(progress, what, "img") as update:
        images = decoded_images(data, size, image_cache(ws), progress=update)
        return image_hashes(iter(images), mirrored=mirrored)
