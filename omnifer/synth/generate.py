"""Write the synthetic FER benchmark to disk (layout: docs/data-format.md).

Determinism: every split is cut into chunks of ``config.chunk_size`` samples, each drawing from
its own seeded stream (:mod:`omnifer.synth.sampling`); identity tables come from their own
streams. The output therefore does not depend on how many worker processes render the chunks:
same seed and config, byte-identical files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from omnifer.artifacts import atomic_write_json
from omnifer.errors import OmniferError
from omnifer.labels import EXPRESSIONS
from omnifer.synth.chunks import Chunk, run_chunk
from omnifer.synth.config import SynthConfig, resolve_config
from omnifer.synth.contact import write_contact_sheets
from omnifer.synth.faces import AUS
from omnifer.synth.label_noise import (add_multi_noise, check_rate, expr_labels,
                                       write_label_noise)
from omnifer.synth.labeled import write_labeled
from omnifer.synth.pool_truth import write_pool_truth
from omnifer.synth.sampling import SPLITS, id_offsets, identity_table
from omnifer.synth.testset import write_test_set

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
#: Identity group of each split.
_GROUPS = {"expr": "labeled", "va": "labeled", "au": "labeled", "multi": "labeled",
           "test": "test", "pool": "pool"}


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
    #: Breakdowns: multi rows per task (multi_expression, ...), pool rows per kind (pool_face, ...)
    #: and, with label noise, the flipped labels per database (label_noise_expr, ...).
    details: dict[str, int] = field(default_factory=dict)
    label_noise: float = 0.0
    #: the flipped labels' hidden truth (only written when ``label_noise`` > 0)
    label_noise_truth: Path | None = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def outputs(self) -> dict[str, str]:
        out = {
            "out": str(self.out), "labeled": str(self.labeled_toml), "test": str(self.test_toml),
            "pool": str(self.pool), "pool_truth": str(self.pool_truth),
        }
        if self.label_noise_truth is not None:
            out["label_noise"] = str(self.label_noise_truth)
        return out


def _check_out_dir(out: Path, config: SynthConfig, seed: int, label_noise: float) -> None:
    """Refuse a non-empty OUT that was not made by the same config, seed and label noise."""
    if not out.exists():
        return
    if not out.is_dir():
        raise OmniferError(f"synth output {out} is a file; give a directory path")
    if not any(out.iterdir()):
        return
    want = {"config": config.to_dict(), "seed": seed, "label_noise": label_noise}
    for marker in ("synth.json", ".synth-partial.json"):
        path = out / marker
        if path.exists():
            try:
                have = json.loads(path.read_text("utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            if {"config": have.get("config"), "seed": have.get("seed"),
                    "label_noise": have.get("label_noise", 0.0)} == want:
                return
            raise OmniferError(
                f"{out} already holds a synthetic benchmark made with a different config or seed, "
                f"or another label noise (seed {have.get('seed')}, label noise "
                f"{have.get('label_noise', 0.0)}); choose another output directory or delete it")
    raise OmniferError(
        f"{out} is not empty and holds no synth.json; choose an empty or new output directory")


def _make_dirs(out: Path, config: SynthConfig) -> None:
    for cls in EXPRESSIONS:
        (out / "labeled/expr" / cls).mkdir(parents=True, exist_ok=True)
    for sub in ("labeled/va/images", "labeled/au/images", "test/images"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for k in range(-(-config.n_pool // config.pool_folder_size)):
        (out / f"pool/{k:05d}").mkdir(parents=True, exist_ok=True)
    (out / "pool").mkdir(exist_ok=True)


def generate(
    out_dir: str | os.PathLike, *, preset: str = "demo", seed: int = 0, size: int | None = None,
    domain_shift: bool = False, label_noise: float = 0.0,
    on_progress: Callable[[int, int], None] | None = None, workers: int | None = None,
    **overrides,
) -> SynthResult:
    """Render the synthetic FER benchmark into ``out_dir``.

    ``preset`` is one of tiny, small, demo, scale, large; ``overrides`` replace fields of its
    :class:`SynthConfig`. ``workers`` (default: up to 2 processes for big runs) does not change
    the output. ``on_progress(done, total)`` is called as images are written.
    ``label_noise`` flips that share of the expression labels of the labeled databases and
    records them in ``label_noise.parquet`` (:mod:`omnifer.synth.label_noise`).
    """
    t0 = time.perf_counter()
    if domain_shift:
        overrides["domain_shift"] = True
    config = resolve_config(preset, size=size, **overrides)
    seed = int(seed)
    if seed < 0:
        raise OmniferError(f"seed {seed} is negative; use a non-negative integer")
    label_noise = check_rate(label_noise)
    noise = {"label_noise": label_noise} if label_noise else {}
    out = Path(out_dir)
    _check_out_dir(out, config, seed, label_noise)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / ".synth-partial.json", {"config": config.to_dict(), "seed": seed,
                                                "preset": preset, **noise})
    _make_dirs(out, config)

    ids = {"labeled": identity_table(config, seed, "labeled"),
           "test": identity_table(config, seed, "test"),
           "pool": identity_table(config, seed, "pool", shifted=config.domain_shift)}
    sizes = {"expr": config.n_expr, "va": config.n_va, "au": config.n_au, "multi": config.n_multi,
             "test": config.n_test, "pool": config.n_pool}
    given = expr_labels(config.n_expr, label_noise, seed)
    chunks = [Chunk(str(out), split, index, start, min(config.chunk_size, total - start), seed,
                    config, ids[_GROUPS[split]], split == "pool" and config.domain_shift,
                    None if given is None or split != "expr"
                    else given[start:start + config.chunk_size])
              for split, total in sizes.items()
              for index, start in enumerate(range(0, total, config.chunk_size))]
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

            from omnifer.data.workers import exit_with_parent

            run_map = stack.enter_context(ProcessPoolExecutor(
                max_workers=workers, mp_context=mp.get_context("spawn"),
                initializer=exit_with_parent, initargs=(os.getpid(),))).map
        for chunk, res in zip(chunks, run_map(run_chunk, chunks)):
            results[(chunk.split, chunk.index)] = res
            done += chunk.n
            if on_progress:
                on_progress(done, grand_total)
    render_s = time.perf_counter() - t_render

    def split_rows(split: str) -> list[dict]:
        return [results[k] for k in sorted(k for k in results if k[0] == split)]

    t_tables = time.perf_counter()
    offsets = id_offsets(config)
    add_multi_noise(split_rows("multi"), label_noise, seed)
    all_counts = {**write_labeled(out, config, split_rows),
                  **write_test_set(out, config, split_rows("test"), offsets["test"]),
                  **write_pool_truth(out, config, split_rows("pool"), offsets["pool"])}
    counts = {k: all_counts[k] for k in SPLITS}
    details = {k: v for k, v in all_counts.items() if k not in SPLITS}
    truth = None
    if label_noise:
        truth, flipped = write_label_noise(out, split_rows("expr"), split_rows("multi"))
        details.update(flipped)
    paths = write_contact_sheets(out, config, split_rows)
    tables_s = time.perf_counter() - t_tables
    seconds = time.perf_counter() - t0
    from omnifer import __version__

    atomic_write_json(out / "synth.json", {
        "generator": "omnifer synth", "format_version": FORMAT_VERSION, "version": __version__,
        "preset": preset, "seed": seed, **noise, "config": config.to_dict(), "counts": counts,
        "details": details,
        "seconds": {"render": round(render_s, 3), "tables": round(tables_s, 3),
                    "total": round(seconds, 3)},
        "workers": workers, "aus": list(AUS), "expressions": list(EXPRESSIONS),
        "identities": {k: [int(v), int(v) + len(ids[k])] for k, v in offsets.items()},
    })
    (out / ".synth-partial.json").unlink(missing_ok=True)
    log.info("synth: wrote %d images to %s in %.1fs", grand_total, out, seconds)
    return SynthResult(
        out=out, config=config, seed=seed, counts=counts, seconds=seconds,
        labeled_toml=out / "labeled.toml", test_toml=out / "test.toml", pool=out / "pool",
        pool_truth=out / "pool_truth.parquet", contact_sheets=tuple(paths), details=details,
        label_noise=label_noise, label_noise_truth=truth,
    )
