"""``mine``: pseudo-label the indexed pool faces whose labeled neighbours agree."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Sequence
from typing import Any

import numpy as np

from omnifer.errors import OmniferError
from omnifer.pipeline import resolve
from omnifer.pipeline.embeddings import labeled_embeddings, labeled_features, labeled_maps
from omnifer.pipeline.progress import Progress, bar
from omnifer.records import IndexRun, MineRun

def mine(workspace: Any = None, config: Any = None, *, index: Any = None, labeled: Any = None,
         model: Any = None, exclude: Sequence[Any] | None = None,
         on_bad_files: str | None = None, progress: Progress | None = None) -> MineRun:
    """Mine the pool of ``index`` (default: the latest index run) with ``labeled`` data
    (default: the data the model was trained on, ``--data`` of its train run; else the latest
    synth run's labeled set). ``model`` must be the one that built the index (default: that
    model); pool faces near an image of ``exclude`` (default: the latest synth run's test set)
    are never mined: faces whose embedding is that close to one of them or to its mirror
    image, and faces whose perceptual hash is that close to one's."""
    from omnifer.artifacts import path_fingerprint, read_json
    from omnifer.mining import MineConfig, check_classes
    from omnifer.mining import mine as mine_pool
    from omnifer.mining.output import export_images, face_hashes, mined_table, sample_ids
    from omnifer.mining.report import class_rows, summary_lines, write_report
    from omnifer.pools import open_pool
    from omnifer.pools.index import feature_norms, load_index_outputs

    ws = resolve.workspace(workspace)
    config = config or MineConfig()
    index_run: IndexRun = resolve.run(ws, index, "index")  # type: ignore[assignment]
    sidecar = read_json(index_run.index / "index.json")
    model_path = resolve.model_dir(ws, model) if model is not None else index_run.model
    fp = path_fingerprint(model_path / "model.safetensors")
    if fp != sidecar.get("model_fingerprint"):
        raise OmniferError(
            f"model {model_path} is not the one that built {index_run.ref} (fingerprints "
            f"{fp[:12]} vs {str(sidecar.get('model_fingerprint'))[:12]}); mine with that model "
            "(leave out --model) or index the pool again with this one")
    if labeled is None:  # the model's own training data, else the latest synth run's
        labeled = resolve.recorded_data(ws, model_path, "train", "data")
    labeled_ref = resolve.synth_output(ws, labeled, "labeled", "--labeled")
    with bar(progress, "reading labeled data", "img") as update:
        data = resolve.read_data(ws, labeled_ref, on_bad_files=on_bad_files, progress=update)
    data = data.subset(data.masks()["expression"])
    classes = data.expressions
    labels = data.table["expression"].to_numpy(np.int64)
    check_classes(labels, classes, config)
    exclude = list(exclude) if exclude else resolve.default_exclude(ws)
    with bar(progress, "reading evaluation data", "img") as update:
        held = [resolve.read_data(ws, ref, on_bad_files=on_bad_files, progress=update)
                for ref in exclude]
    pool, ids = load_index_outputs(index_run.embeddings, index_run.ids)
    pool_norms = feature_norms(ids)
    run_config = {"mine": dataclasses.asdict(config), "index": index_run.run_id,
                  "labeled": ws.portable(labeled_ref),
                  "exclude": [ws.portable(e) for e in exclude], "model": ws.portable(model_path)}
    inputs = {"index": index_run.run, "model": model_path, "labeled": labeled_ref,
              **{f"exclude_{i}": ref for i, ref in enumerate(exclude)}}
    scorers = uncertainty_models(ws, model_path, config.device) \
        if config.max_uncertainty is not None else []
    # an interrupted run with the same config and inputs is reopened: its pool pass goes on
    # from the spans it saved in evidence/ (removed once the run completes)
    with ws.start_run("mine", config=run_config, inputs=inputs, seed=config.seed,
                      device=config.device, resume=True) as run:
        labeled_emb, labeled_norms = labeled_features(ws, data, model_path, config.device,
                                                      progress=progress,
                                                      what="embedding labeled faces")
        held_emb = [labeled_embeddings(ws, h, model_path, config.device, progress=progress,
                                       what="embedding evaluation faces", mirrored=mirrored)
                    for h in held for mirrored in (False, True)]
        held_hashes = [_image_hashes(ws, h, progress) for h in held]
        faiss_index, approximate = _pool_index(index_run, sidecar, config.search)
        src = open_pool(index_run.pool, index_run.source, **index_run.source_options)

        def pool_hashes(pool_rows: np.ndarray) -> np.ndarray:
            with bar(progress, "hashing mined faces", "img") as update:
                return face_hashes(src, ids.iloc[pool_rows], detected=index_run.detect is not None,
                                   progress=update)

        with bar(progress, "mining", "face") as update:
            result = mine_pool(pool, labeled_emb, labels, classes=classes, config=config,
                               index=faiss_index, approximate=approximate,
                               exclude=np.concatenate(held_emb) if held_emb else None,
                               exclude_hashes=np.concatenate(held_hashes) if held else None,
                               pool_hashes=pool_hashes, pool_norms=pool_norms,
                               labeled_norms=labeled_norms, progress=update,
                               checkpoint=run.path / "evidence")
        if pool_norms is None:
            result.notes.append(
                f"{index_run.ref} has no feature norms (indexed by omnifer 0.1), so only the "
                "neighbour check rejected out-of-distribution faces; run omnifer index again "
                "to add them")
        rows = ids.iloc[result.rows].reset_index(drop=True)
        occlusion = None
        if config.ood_quantile > 0 and len(rows):
            from omnifer.mining.occlusion import drop_occluded

            maps = pool_maps(model_path, src, rows, detected=index_run.detect is not None,
                             device=config.device, progress=progress)
            result, occlusion = drop_occluded(
                result, maps, labeled_maps(ws, data, model_path, config.device,
                                           progress=progress),
                quantile=config.ood_quantile, classes=classes)
            rows = ids.iloc[result.rows].reset_index(drop=True)
        epistemic, uncertain = None, None
        if config.max_uncertainty is not None:
            from omnifer.mining.uncertainty_filter import filter_result

            values, how = epistemic_uncertainty(
                scorers, src, rows, detected=index_run.detect is not None, config=config,
                progress=progress)
            result, epistemic, uncertain = filter_result(
                result, values, config.max_uncertainty, classes=classes, how=how)
            rows = ids.iloc[result.rows].reset_index(drop=True)
        rows["sample_id"] = sample_ids(rows)
        with bar(progress, "exporting images", "img") as update:
            images = export_images(src, rows, run.path / "images",
                                   detected=index_run.detect is not None, progress=update)
        mined, extra = mined_table(
            result, ids, images, classes=classes, aus=data.aus,
            labeled_ids=data.table["sample_id"].tolist(), model_fingerprint=fp,
            index_fingerprint=path_fingerprint(index_run.index / "index.faiss"),
            epistemic=epistemic)
        dataset = mined.save(run.path / "mined.parquet", extra=extra, root=ws.root)
        files = write_report(result, run.path, classes=classes, config=config,
                             inputs={"index": index_run.ref, "model": str(model_path),
                                     "labeled": str(labeled_ref)})
        estimate = {**result.estimate,
                    "per_class": {classes[c]: v for c, v in result.estimate["per_class"].items()}}
        run.complete(outputs={"dataset": dataset, **files}, counts=result.counts,
                     similarity="cosine of L2-normalised embeddings", search=result.search,
                     thresholds=class_rows(result, classes), estimate=estimate,
                     recall=result.recall, calibration_curve=result.calibration.curve(50),
                     ood_cut=result.ood_cut, norm_cut=result.norm_cut, occlusion=occlusion,
                     uncertainty=uncertain,
                     summary=summary_lines(result, classes))
        shutil.rmtree(run.path / "evidence", ignore_errors=True)
    return MineRun.from_run(run)


def uncertainty_models(ws: Any, model_path: Any, device: str) -> list[Any]:
    """The models that score ``--max-uncertainty``: every member of the train run that
    ``model_path`` belongs to (one member may have embedded the pool), or the model alone,
    which then needs dropout (Monte-Carlo dropout passes)."""
    from omnifer.device import resolve_device
    from omnifer.models import load_models

    dev = resolve_device(device)
    models = [m for p in primitive_members(ws, model_path) for m in load_models(p, device=dev)]
    cfg = models[0].config
    if len(models) == 1 and not 0.0 < cfg.dropout < 1.0:
        raise OmniferError(
            f"the model at {model_path} has no dropout (rate {cfg.dropout}), so Monte-Carlo "
            "dropout cannot score its uncertainty; mine with an ensemble (omnifer train "
            "--ensemble 3) or a model trained with dropout, or leave out --max-uncertainty")
    if "expression" not in cfg.tasks:
        raise OmniferError(f"the model at {model_path} has no expression head; --max-uncertainty "
                           "needs one (train with --tasks expression,...)")
    return models


def epistemic_uncertainty(models: Sequence[Any], source: Any, rows: Any, *, detected: bool,
                          config: Any, progress: Progress | None = None
                          ) -> tuple[np.ndarray, str]:
    """float32 [n]: the epistemic uncertainty (/ log C) of ``models`` (``uncertainty_models``)
    on each pool face of ``rows`` (key, face, landmarks), and how it was scored: the members'
    disagreement, or that of ``config.mc_passes`` Monte-Carlo dropout passes of a single model
    at its own dropout rate."""
    from omnifer.data.batches import BatchMaker
    from omnifer.mining.output import face_crops
    from omnifer.models.inference import predict_models, uncertainty

    cfg = models[0].config
    dev = next(models[0].parameters()).device
    out = np.empty(len(rows), np.float32)
    done = 0
    with bar(progress, "scoring uncertainty of mined faces", "img") as update:
        for crops in face_crops(source, rows, detected=detected, size=cfg.input_size,
                                progress=update):
            maker = BatchMaker(crops, mean=cfg.mean, std=cfg.std, device=dev)
            pred = predict_models(models, maker, np.arange(len(crops)),
                                  mc_passes=config.mc_passes if len(models) == 1 else 0)
            out[done:done + len(crops)] = uncertainty(pred)["expression_epistemic"]
            done += len(crops)
    how = (f"ensemble of {len(models)} members" if len(models) > 1 else
           f"Monte-Carlo dropout, {config.mc_passes} passes at rate {cfg.dropout:g}")
    return out, how


def pool_maps(model_path: Any, source: Any, rows: Any, *, detected: bool, device: str,
              progress: Progress | None = None) -> np.ndarray:
    """float32 [n, h, w]: the activation maps (``Embedder.activation_maps``) of the pool faces
    of ``rows`` (key, face, landmarks) by the model at ``model_path``."""
    from omnifer.mining.output import face_crops
    from omnifer.models.embedder import Embedder

    embedder = Embedder(model_path, device=device, batch_size=64)
    with bar(progress, "checking mined faces for occlusion", "img") as update:
        return np.concatenate([embedder.activation_maps(crops) for crops in face_crops(
            source, rows, detected=detected, size=embedder.size, progress=update)])


def primitive_members(ws: Any, model_path: Any) -> list[Any]:
    """The checkpoint folders of every member of the train run holding ``model_path`` (a
    member folder), or ``model_path`` alone when it belongs to no train run."""
    from pathlib import Path

    owner = ws.owner(model_path)
    if owner is None or owner.stage != "train":
        return [Path(model_path)]
    return list(resolve.run(ws, owner, "train").members)  # type: ignore[attr-defined]


def _image_hashes(ws: Any, data: Any, progress: Progress | None) -> np.ndarray:
    """Perceptual hashes of the images of ``data`` and of their mirror images, cached."""
    from omnifer.artifacts import atomic_path, fingerprint
    from omnifer.data.cache import cache_key
    from omnifer.data.images import decode_image
    from omnifer.mining.leaks import BITS, SIDE, image_hashes

    key = fingerprint({"hash": f"dct{SIDE}x{BITS}", "images": cache_key(data, 0)})
    path = ws.cache_dir / "hashes" / f"{key}.npy"
    if path.is_file():
        return np.load(path)
    refs = data.table["image"].tolist()
    with bar(progress, "hashing evaluation faces", "img") as update:
        def images() -> Any:
            for i, ref in enumerate(refs):
                yield decode_image(ref)
                update(i + 1, len(refs))

        hashes = image_hashes(images(), mirrored=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, hashes)
    return hashes


def _pool_index(run: IndexRun, sidecar: dict[str, Any], search: str) -> tuple[Any, bool]:
    """The pool's FAISS index when the search needs it, and whether it is approximate."""
    approximate = sidecar.get("factory", "Flat") != "Flat"
    if search == "exact" or (search == "auto" and not approximate):
        return None, approximate
    from omnifer.pools.faiss_index import read_index

    return read_index(run.index)[0], approximate
