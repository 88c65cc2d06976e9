"""Write the synthetic FER benchmark to disk (layout: docs/data-format.md), and an in-memory
sampler for calibration and tests.

Determinism: every split is cut into chunks of ``config.chunk_size`` samples; chunk ``k`` of
split ``s`` draws from ``SeedSequence(seed, spawn_key=(s, k))``. Identity tables come from
their own streams. The output therefore does not depend on how many worker processes render
the chunks: same seed and config, byte-identical files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from omnifer.artifacts import atomic_path, atomic_write_bytes, atomic_write_json
from omnifer.errors import OmniferError
from omnifer.labels import EXPRESSIONS
from omnifer.synth.config import SynthConfig, resolve_config
from omnifer.synth.faces import AUS, N_AUS, N_CLASSES, au_binary, make_identities, sample_expression_labels

log = logging.getLogger(__name__)

#: Split name -> stream code used in seed spawn keys (never reorder).
SPLITS: dict[str, int] = {"expr": 1, "va": 2, "au": 3, "multi": 4, "test": 5, "pool": 6}
_ID_STREAMS = {"labeled": 101, "test": 102, "pool": 103}
POOL_KINDS: tuple[str, ...] = ("face", "nonface", "occluded", "blend")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SynthResult:
    """What :func:`generate` wrote."""

    out: Path
    config: SynthConfig
    seed: int
    counts: dict[str, int]  # images per split: expr, va, au, multi, test, pool
    seconds: float
    labeled_toml: Path
    test_toml: Path
    pool: Path
    pool_truth: Path
    contact_sheets: tuple[Path, ...] = field(default=())
    #: Breakdowns: multi rows per task (multi_expression, ...), pool rows per kind (pool_face, ...).
    details: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def outputs(self) -> dict[str, str]:
        return {
            "out": str(self.out), "labeled": str(self.labeled_toml), "test": str(self.test_toml),
            "pool": str(self.pool), "pool_truth": str(self.pool_truth),
        }


# ------------------------------------------------------------------------------ identities

def _identities(config: SynthConfig, seed: int, group: str, *, shifted: bool = False) -> np.ndarray:
    n = {"labeled": config.n_identities_labeled, "test": config.n_identities_test,
         "pool": config.n_identities_pool}[group]
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_ID_STREAMS[group],)))
    return make_identities(n, rng, variation=config.identity_variation, shifted=shifted)


def _id_offsets(config: SynthConfig) -> dict[str, int]:
    return {"labeled": 0, "test": config.n_identities_labeled,
            "pool": config.n_identities_labeled + config.n_identities_test}


# ------------------------------------------------------------------------------ rendering

def _sample_rows(
    rng: np.random.Generator, n: int, config: SynthConfig, split: str, start: int,
    identities: np.ndarray, *, shifted: bool,
) -> dict[str, np.ndarray]:
    """Labels of ``n`` samples of ``split`` (classes, kinds, AUs, valence/arousal, identity)."""
    if split == "expr":  # balanced class folders
        classes = (np.arange(start, start + n) % N_CLASSES).astype(np.int64)
    elif split == "pool":
        p = np.asarray(config.pool_class_probs, dtype=np.float64)
        classes = rng.choice(N_CLASSES, size=n, p=p / p.sum())
    else:
        classes = rng.integers(0, N_CLASSES, n)
    kind = np.zeros(n, dtype=np.int64)
    classes2 = np.full(n, -1, dtype=np.int64)
    blend = np.ones(n, dtype=np.float64)
    if split == "pool":
        u = rng.random(n)
        r1 = config.pool_nonface_rate
        r2 = r1 + config.pool_occluded_rate
        r3 = r2 + config.pool_blend_rate
        kind = np.select([u < r1, u < r2, u < r3], [1, 2, 3], 0)
        other = (classes + rng.integers(1, N_CLASSES, n)) % N_CLASSES
        w = 0.5 + 0.25 * rng.random(n)
        is_blend = kind == 3
        classes2 = np.where(is_blend, other, -1)
        blend = np.where(is_blend, w, 1.0)
    lab = sample_expression_labels(
        rng, classes, config.expression_params(),
        classes2=np.where(classes2 >= 0, classes2, classes), blend=blend,
    )
    ident = rng.integers(0, len(identities), n)
    quality = rng.integers(config.jpeg_quality_min, config.jpeg_quality_max + 1, n)
    return {"expression": classes, "kind": kind, "expression2": classes2, "blend": blend,
            "au": lab["au"], "valence": lab["valence"], "arousal": lab["arousal"],
            "identity": ident, "quality": quality}


def _render_rows(
    rng: np.random.Generator, rows: dict[str, np.ndarray], identities: np.ndarray, size: int,
    config: SynthConfig, *, shifted: bool,
) -> list[bytes]:
    from omnifer.synth.render import encode_jpeg, render_face, render_nonface

    params = config.render_params(shifted=shifted)
    out = []
    for i in range(len(rows["expression"])):
        kind = int(rows["kind"][i])
        if kind == 1:
            img = render_nonface(rng, size, params)
        else:
            img = render_face(rng, identities[rows["identity"][i]], rows["au"][i], size, params,
                              occlusion="heavy" if kind == 2 else "random")
        out.append(encode_jpeg(img, int(rows["quality"][i])))
    return out


def _chunk_rng(seed: int, split: str, chunk: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(SPLITS[split], chunk)))


def _rel_path(split: str, idx: int, cls: int, config: SynthConfig) -> str:
    if split == "expr":
        return f"labeled/expr/{EXPRESSIONS[cls]}/expr_{idx:06d}.jpg"
    if split == "va":
        return f"labeled/va/images/va_{idx:06d}.jpg"
    if split == "au":
        return f"labeled/au/images/au_{idx:06d}.jpg"
    if split == "test":
        return f"test/images/{idx:06d}.jpg"
    if split == "pool":
        return f"pool/{idx // config.pool_folder_size:05d}/{idx:06d}.jpg"
    raise ValueError(split)


def _write_image(path: Path, data: bytes) -> None:
    """Write an image via a temporary name and ``os.replace`` (no fsync: cheap per file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _run_chunk(job: tuple) -> dict:
    """Render one chunk; write its files (all splits except ``multi``); return its labels."""
    out_dir, split, chunk, start, n, seed, config, identities, shifted = job
    rng = _chunk_rng(seed, split, chunk)
    rows = _sample_rows(rng, n, config, split, start, identities, shifted=shifted)
    images = _render_rows(rng, rows, identities, config.size, config, shifted=shifted)
    if split == "multi":
        rows["bytes"] = images
        # Which tasks each row carries: all three on a fraction, one or two otherwise.
        full = rng.random(n) < config.multi_full_fraction
        subsets = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]], bool)
        pick = subsets[rng.integers(0, len(subsets), n)]
        rows["tasks"] = np.where(full[:, None], True, pick)
    else:
        paths = []
        for i, data in enumerate(images):
            rel = _rel_path(split, start + i, int(rows["expression"][i]), config)
            _write_image(Path(out_dir) / rel, data)
            paths.append(rel)
        rows["file"] = paths
    rows["split"], rows["chunk"] = split, chunk
    return rows


# ------------------------------------------------------------------------------ in-memory API

def sample_faces(
    n: int, rng: np.random.Generator, *, config: SynthConfig | None = None, size: int | None = None,
    identities: np.ndarray | None = None, classes: np.ndarray | None = None, jpeg: bool = True,
    shifted: bool = False,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Render ``n`` labeled faces in memory.

    Returns ``images`` uint8 [n, size, size, 3] (JPEG round-tripped unless ``jpeg=False``) and
    labels: ``expression`` (canonical index), ``valence``, ``arousal``, ``au`` (intensities
    [n, len(AUS)]), ``au_binary``, ``identity`` (row of ``identities``). Without
    ``identities``, ``config.n_identities_labeled`` fresh identities are drawn from ``rng``.
    """
    from omnifer.synth.render import decode_jpeg, encode_jpeg, render_face

    config = config or resolve_config("demo")
    size = int(size or config.size)
    if identities is None:
        identities = make_identities(config.n_identities_labeled, rng,
                                     variation=config.identity_variation, shifted=shifted)
    if classes is None:
        classes = rng.integers(0, N_CLASSES, n)
    classes = np.asarray(classes, dtype=np.int64)
    if len(classes) != n:
        raise OmniferError(f"classes has {len(classes)} entries for n={n} faces; give one per face")
    lab = sample_expression_labels(rng, classes, config.expression_params())
    ident = rng.integers(0, len(identities), n)
    quality = rng.integers(config.jpeg_quality_min, config.jpeg_quality_max + 1, n)
    params = config.render_params(shifted=shifted)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        img = render_face(rng, identities[ident[i]], lab["au"][i], size, params)
        images[i] = decode_jpeg(encode_jpeg(img, int(quality[i]))) if jpeg else np.asarray(img)
    labels = {"expression": classes, "valence": lab["valence"], "arousal": lab["arousal"],
              "au": lab["au"], "au_binary": au_binary(lab["au"], config.au_threshold),
              "identity": ident}
    return images, labels


# ------------------------------------------------------------------------------ writer

def _check_out_dir(out: Path, config: SynthConfig, seed: int) -> None:
    """Refuse a non-empty OUT that was not made by the same config and seed."""
    if not out.exists():
        return
    if not out.is_dir():
        raise OmniferError(f"synth output {out} is a file; give a directory path")
    if not any(out.iterdir()):
        return
    want = {"config": config.to_dict(), "seed": seed}
    for marker in ("synth.json", ".synth-partial.json"):
        path = out / marker
        if path.exists():
            try:
                have = json.loads(path.read_text("utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            if {"config": have.get("config"), "seed": have.get("seed")} == want:
                return
            raise OmniferError(
                f"{out} already holds a synthetic benchmark made with a different config or seed "
                f"(seed {have.get('seed')}); choose another output directory or delete it")
    raise OmniferError(
        f"{out} is not empty and holds no synth.json; choose an empty or new output directory")


def _write_parquet(path: Path, table) -> None:
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _au_columns(au: np.ndarray, threshold: float, present: np.ndarray | None = None) -> dict:
    """``AU<n>`` (int8 0/1) and ``AU<n>_intensity`` (float32) arrays, null where absent."""
    import pyarrow as pa

    binary = au_binary(au, threshold)
    cols = {}
    mask = None if present is None else ~np.asarray(present, bool)
    for j, name in enumerate(AUS):
        cols[name] = pa.array(binary[:, j].astype(np.int8), mask=mask)
    for j, name in enumerate(AUS):
        cols[f"{name}_intensity"] = pa.array(au[:, j].astype(np.float32), mask=mask)
    return cols


def _schema_meta(extra: dict | None = None) -> dict[bytes, bytes]:
    meta = {"omnifer.expressions": json.dumps(list(EXPRESSIONS)),
            "omnifer.aus": json.dumps(list(AUS)), "omnifer.source": "omnifer synth"}
    meta.update(extra or {})
    return {k.encode(): v.encode() for k, v in meta.items()}


def _concat(chunks: list[dict], key: str) -> np.ndarray | list:
    parts = [c[key] for c in chunks]
    if isinstance(parts[0], list):
        return [x for p in parts for x in p]
    return np.concatenate(parts) if parts else np.array([])


def _toml_db(name: str, path: str, fmt: str, tasks: list[str]) -> str:
    tasks_s = ", ".join(f'"{t}"' for t in tasks)
    return (f'[[database]]\nname = "{name}"\npath = "{path}"\nformat = "{fmt}"\n'
            f'tasks = [{tasks_s}]\nlabel_order = "canonical"\n')


def generate(
    out_dir: str | os.PathLike, *, preset: str = "demo", seed: int = 0, size: int | None = None,
    domain_shift: bool = False, on_progress: Callable[[int, int], None] | None = None,
    workers: int | None = None, **overrides,
) -> SynthResult:
    """Render the synthetic FER benchmark into ``out_dir``.

    ``preset`` is one of tiny, small, demo, large; ``overrides`` replace fields of its
    :class:`SynthConfig`. ``workers`` (default: up to 2 processes for big runs) does not change
    the output. ``on_progress(done, total)`` is called as images are written.
    """
    t0 = time.perf_counter()
    if domain_shift:
        overrides["domain_shift"] = True
    config = resolve_config(preset, size=size, **overrides)
    seed = int(seed)
    if seed < 0:
        raise OmniferError(f"seed {seed} is negative; use a non-negative integer")
    out = Path(out_dir)
    _check_out_dir(out, config, seed)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / ".synth-partial.json", {"config": config.to_dict(), "seed": seed,
                                                "preset": preset})
    for cls in EXPRESSIONS:
        (out / "labeled/expr" / cls).mkdir(parents=True, exist_ok=True)
    for sub in ("labeled/va/images", "labeled/au/images", "test/images"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for k in range(-(-config.n_pool // config.pool_folder_size)):
        (out / f"pool/{k:05d}").mkdir(parents=True, exist_ok=True)
    (out / "pool").mkdir(exist_ok=True)

    ids = {"labeled": _identities(config, seed, "labeled"),
           "test": _identities(config, seed, "test"),
           "pool": _identities(config, seed, "pool", shifted=config.domain_shift)}
    group = {"expr": "labeled", "va": "labeled", "au": "labeled", "multi": "labeled",
             "test": "test", "pool": "pool"}
    sizes = {"expr": config.n_expr, "va": config.n_va, "au": config.n_au, "multi": config.n_multi,
             "test": config.n_test, "pool": config.n_pool}
    jobs = []
    for split, total in sizes.items():
        for chunk, start in enumerate(range(0, total, config.chunk_size)):
            n = min(config.chunk_size, total - start)
            shifted = split == "pool" and config.domain_shift
            jobs.append((str(out), split, chunk, start, n, seed, config, ids[group[split]], shifted))
    grand_total = sum(sizes.values())
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if grand_total >= 3000 else 1
    results: dict[tuple[str, int], dict] = {}
    done = 0
    t_render = time.perf_counter()
    if on_progress:
        on_progress(0, grand_total)
    with contextlib.ExitStack() as stack:
        run_map = map
        if workers > 1:
            import multiprocessing as mp

            run_map = stack.enter_context(ProcessPoolExecutor(
                max_workers=workers, mp_context=mp.get_context("spawn"))).map
        for job, res in zip(jobs, run_map(_run_chunk, jobs)):
            results[(job[1], job[2])] = res
            done += job[4]
            if on_progress:
                on_progress(done, grand_total)
    render_s = time.perf_counter() - t_render

    def split_rows(split: str) -> list[dict]:
        keys = sorted(k for k in results if k[0] == split)
        return [results[k] for k in keys]

    t_tables = time.perf_counter()
    all_counts = _write_tables(out, config, split_rows, _id_offsets(config))
    counts = {k: all_counts[k] for k in SPLITS}
    details = {k: v for k, v in all_counts.items() if k not in SPLITS}
    paths = _write_contact_sheets(out, config, split_rows)
    tables_s = time.perf_counter() - t_tables
    seconds = time.perf_counter() - t0
    from omnifer import __version__

    atomic_write_json(out / "synth.json", {
        "generator": "omnifer synth", "format_version": FORMAT_VERSION, "version": __version__,
        "preset": preset, "seed": seed, "config": config.to_dict(), "counts": counts,
        "details": details,
        "seconds": {"render": round(render_s, 3), "tables": round(tables_s, 3),
                    "total": round(seconds, 3)},
        "workers": workers, "aus": list(AUS), "expressions": list(EXPRESSIONS),
        "identities": {k: [int(v), int(v) + len(ids[k])] for k, v in _id_offsets(config).items()},
    })
    (out / ".synth-partial.json").unlink(missing_ok=True)
    log.info("synth: wrote %d images to %s in %.1fs", grand_total, out, seconds)
    return SynthResult(
        out=out, config=config, seed=seed, counts=counts, seconds=seconds,
        labeled_toml=out / "labeled.toml", test_toml=out / "test.toml", pool=out / "pool",
        pool_truth=out / "pool_truth.parquet", contact_sheets=tuple(paths), details=details,
    )


def _write_tables(out: Path, config: SynthConfig, split_rows, id_offsets: dict) -> dict[str, int]:
    import pyarrow as pa

    thr = config.au_threshold
    counts: dict[str, int] = {}
    # expr: class folders only.
    counts["expr"] = config.n_expr
    # va: CSV manifest.
    va = split_rows("va")
    if va:
        files = _concat(va, "file")
        v, a = _concat(va, "valence"), _concat(va, "arousal")
        lines = ["image,valence,arousal"]
        lines += [f"{Path(f).relative_to('labeled/va').as_posix()},{x:.4f},{y:.4f}"
                  for f, x, y in zip(files, v, a)]
        atomic_write_bytes(out / "labeled/va/labels.csv", ("\n".join(lines) + "\n").encode())
    else:
        atomic_write_bytes(out / "labeled/va/labels.csv", b"image,valence,arousal\n")
    counts["va"] = config.n_va
    # au: Parquet manifest.
    au = split_rows("au")
    au_int = _concat(au, "au") if au else np.zeros((0, N_AUS))
    files = [Path(f).relative_to("labeled/au").as_posix() for f in (_concat(au, "file") if au else [])]
    cols = {"image": pa.array(files, pa.string()), **_au_columns(au_int.reshape(-1, N_AUS), thr)}
    _write_parquet(out / "labeled/au/labels.parquet",
                   pa.table(cols).replace_schema_metadata(_schema_meta()))
    counts["au"] = config.n_au
    # multi: a datasets save_to_disk with partial labels.
    counts.update(_write_multi(out, config, split_rows("multi")))
    # test: every label.
    te = split_rows("test")
    n_te = config.n_test
    au_te = _concat(te, "au") if te else np.zeros((0, N_AUS))
    cols = {
        "image": pa.array([Path(f).relative_to("test").as_posix() for f in (_concat(te, "file") if te else [])],
                          pa.string()),
        "expression": pa.array([EXPRESSIONS[int(c)] for c in (_concat(te, "expression") if te else [])],
                               pa.string()),
        "valence": pa.array(_concat(te, "valence").astype(np.float32) if te else [], pa.float32()),
        "arousal": pa.array(_concat(te, "arousal").astype(np.float32) if te else [], pa.float32()),
        **_au_columns(au_te.reshape(-1, N_AUS), thr),
        "identity": pa.array((_concat(te, "identity") + id_offsets["test"]).astype(np.int32) if te else [],
                             pa.int32()),
    }
    _write_parquet(out / "test/labels.parquet", pa.table(cols).replace_schema_metadata(_schema_meta()))
    counts["test"] = n_te
    # pool truth (outside pool/).
    po = split_rows("pool")
    counts.update(_write_pool_truth(out, config, po, id_offsets["pool"]))
    # TOML descriptions.
    labeled = "\n".join([
        "# omnifer synthetic benchmark: labeled databases (paths relative to this file)\n"
        'on_bad_files = "error"\n',
        _toml_db("synth-expr", "labeled/expr", "folder", ["expression"]),
        _toml_db("synth-va", "labeled/va/labels.csv", "csv", ["va"]),
        _toml_db("synth-au", "labeled/au/labels.parquet", "parquet", ["au"]),
        _toml_db("synth-multi", "labeled/multi", "hf", ["expression", "va", "au"]),
    ])
    atomic_write_bytes(out / "labeled.toml", labeled.encode())
    test = ("# omnifer synthetic benchmark: test set with every label\n"
            'on_bad_files = "error"\n\n'
            + _toml_db("synth-test", "test/labels.parquet", "parquet", ["expression", "va", "au"]))
    atomic_write_bytes(out / "test.toml", test.encode())
    return counts


def _write_multi(out: Path, config: SynthConfig, chunks: list[dict]) -> dict[str, int]:
    import datasets

    names = list(EXPRESSIONS)
    feats = {"image": datasets.Image(), "expression": datasets.ClassLabel(names=names),
             "valence": datasets.Value("float32"), "arousal": datasets.Value("float32")}
    for a in AUS:
        feats[a] = datasets.Value("int8")
    for a in AUS:
        feats[f"{a}_intensity"] = datasets.Value("float32")
    n = config.n_multi
    if chunks:
        data = _concat(chunks, "bytes")
        tasks = _concat(chunks, "tasks")
        expr, val, aro = _concat(chunks, "expression"), _concat(chunks, "valence"), _concat(chunks, "arousal")
        au = _concat(chunks, "au")
    else:
        data, tasks = [], np.zeros((0, 3), bool)
        expr = val = aro = np.zeros(0)
        au = np.zeros((0, N_AUS))
    binary = au_binary(au, config.au_threshold)
    cols: dict[str, list] = {
        "image": [{"bytes": b, "path": f"multi_{i:06d}.jpg"} for i, b in enumerate(data)],
        "expression": [int(c) if t else None for c, t in zip(expr, tasks[:, 0])],
        "valence": [float(v) if t else None for v, t in zip(val, tasks[:, 1])],
        "arousal": [float(v) if t else None for v, t in zip(aro, tasks[:, 1])],
    }
    for j, a in enumerate(AUS):
        cols[a] = [int(b) if t else None for b, t in zip(binary[:, j], tasks[:, 2])]
    for j, a in enumerate(AUS):
        cols[f"{a}_intensity"] = [float(v) if t else None for v, t in zip(au[:, j], tasks[:, 2])]
    ds = datasets.Dataset.from_dict(cols, features=datasets.Features(feats))
    target = out / "labeled/multi"
    tmp = out / "labeled/.multi.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        ds.save_to_disk(str(tmp))
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return {"multi": n, "multi_expression": int(tasks[:, 0].sum()), "multi_va": int(tasks[:, 1].sum()),
            "multi_au": int(tasks[:, 2].sum()), "multi_all_tasks": int(tasks.all(axis=1).sum())}


def _write_pool_truth(out: Path, config: SynthConfig, chunks: list[dict], id_offset: int) -> dict[str, int]:
    import pyarrow as pa

    if chunks:
        files = [Path(f).relative_to("pool").as_posix() for f in _concat(chunks, "file")]
        kind = _concat(chunks, "kind")
        expr, expr2 = _concat(chunks, "expression"), _concat(chunks, "expression2")
        blend, val, aro = _concat(chunks, "blend"), _concat(chunks, "valence"), _concat(chunks, "arousal")
        au, ident = _concat(chunks, "au"), _concat(chunks, "identity")
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
        **_au_columns(au.reshape(-1, N_AUS), config.au_threshold, present=~nonface),
        "identity": pa.array((ident + id_offset).astype(np.int32), mask=nonface),
        "domain": pa.array([domain] * len(files), pa.string()),
    }
    _write_parquet(out / "pool_truth.parquet", pa.table(cols).replace_schema_metadata(
        _schema_meta({"omnifer.pool_kinds": json.dumps(list(POOL_KINDS))})))
    return {"pool": config.n_pool, **{f"pool_{k}": int((kind == i).sum()) for i, k in enumerate(POOL_KINDS)}}


def _write_contact_sheets(out: Path, config: SynthConfig, split_rows, per_class: int = 4) -> list[Path]:
    from PIL import Image, ImageDraw

    s = config.size
    cap = 12
    paths = []

    def sheet(name: str, cells: list[tuple[str, bytes | Path]], ncols: int) -> None:
        if not cells:
            return
        nrows = -(-len(cells) // ncols)
        img = Image.new("RGB", (ncols * s, nrows * (s + cap)), (255, 255, 255))
        d = ImageDraw.Draw(img)
        import io

        for k, (text, src) in enumerate(cells):
            x, y = (k % ncols) * s, (k // ncols) * (s + cap)
            with Image.open(io.BytesIO(src) if isinstance(src, bytes) else src) as face:
                img.paste(face.convert("RGB"), (x, y))
            d.text((x + 2, y + s), text[: max(4, s // 6)], fill=(0, 0, 0))
        path = out / name
        with atomic_path(path) as tmp:
            img.save(tmp, format="PNG")
        paths.append(path)

    def by_class(chunks: list[dict], root: Path) -> list[tuple[str, Path]]:
        if not chunks:
            return []
        files, expr = _concat(chunks, "file"), _concat(chunks, "expression")
        cells = []
        for row in range(per_class):
            for c in range(N_CLASSES):
                idx = np.flatnonzero(expr == c)
                if row < len(idx):
                    cells.append((EXPRESSIONS[c], root / files[idx[row]]))
        return cells

    sheet("contact_labeled.png", by_class(split_rows("expr"), out), N_CLASSES)
    sheet("contact_test.png", by_class(split_rows("test"), out), N_CLASSES)
    po = split_rows("pool")
    if po:
        files, kind = _concat(po, "file"), _concat(po, "kind")
        expr, expr2 = _concat(po, "expression"), _concat(po, "expression2")
        cells = []
        for k, kname in enumerate(POOL_KINDS):
            for i in np.flatnonzero(kind == k)[: (N_CLASSES * 2 if k == 0 else N_CLASSES)]:
                if kname == "nonface":
                    text = "nonface"
                elif kname == "blend":
                    text = f"{EXPRESSIONS[expr[i]][:4]}+{EXPRESSIONS[expr2[i]][:4]}"
                elif kname == "occluded":
                    text = f"occ {EXPRESSIONS[expr[i]]}"
                else:
                    text = EXPRESSIONS[expr[i]]
                cells.append((text, out / files[i]))
        sheet("contact_pool.png", cells, N_CLASSES)
    return paths
