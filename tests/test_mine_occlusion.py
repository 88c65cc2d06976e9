"""The occlusion check of mining: mined faces whose weakest activation region is far below a
typical labeled face's are left out."""

import json

import numpy as np
import pandas as pd
import pytest

from omnifer.errors import OmniferError
from omnifer.mining.mine import MineConfig, mine
from omnifer.mining.occlusion import (
    drop_occluded,
    reference_map,
    weakest_region,
    window_side,
)

CLASSES = ("a", "b", "c")


def brute_force(maps, reference):
    k = window_side(min(reference.shape))
    rel = maps / reference
    h, w = reference.shape
    return np.array([min(rel[n, i:i + k, j:j + k].mean() for i in range(h - k + 1)
                         for j in range(w - k + 1)) for n in range(len(maps))])


def test_window_is_three_eighths_of_the_map_side():
    assert [window_side(s) for s in (1, 2, 4, 7, 8, 14)] == [1, 1, 2, 3, 3, 5]


def test_weakest_region_finds_the_covered_window():
    reference = np.full((8, 8), 2.0, np.float32)
    maps = np.full((3, 8, 8), 2.0, np.float32)
    maps[1, 4:7, 2:5] = 0.0  # a 3 x 3 region the model sees nothing in
    maps[2, 0:2, 0:2] = 0.0  # a 2 x 2 one: the weakest 3 x 3 window keeps 5 of 9 positions
    assert np.allclose(weakest_region(maps, reference), [1.0, 0.0, 5 / 9])
    rng = np.random.default_rng(0)
    maps = rng.uniform(0.1, 3, (20, 8, 8)).astype(np.float32)
    reference = reference_map(maps)
    assert np.array_equal(reference, np.median(maps, axis=0).astype(np.float32))  # all > 0
    assert np.allclose(weakest_region(maps, reference), brute_force(maps, reference), atol=1e-6)
    small = rng.uniform(0.1, 3, (5, 4, 4)).astype(np.float32)  # window 2 on a 4 x 4 map
    assert np.allclose(weakest_region(small, reference_map(small)),
                       brute_force(small, reference_map(small)), atol=1e-6)


def test_a_reference_of_zeros_still_divides():
    ref = reference_map(np.zeros((4, 8, 8), np.float32))
    assert (ref > 0).all() and np.isfinite(weakest_region(np.ones((1, 8, 8)), ref)).all()


@pytest.mark.parametrize("call, message", [
    (lambda: reference_map(np.zeros((0, 8, 8))), "no labeled activation maps"),
    (lambda: reference_map(np.zeros((8, 8))), "must be [faces, height, width]"),
    (lambda: weakest_region(np.ones((2, 4, 4)), np.ones((8, 8))),
     "compute both with the same model"),
])
def test_bad_maps_are_one_line_errors(call, message):
    with pytest.raises(OmniferError) as err:
        call()
    assert message in str(err.value) and "\n" not in str(err.value)


def mined_result():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 16))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(3), 30)

    def unit(x):
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    labeled = unit(centres[labels] + 0.08 * rng.standard_normal((90, 16)))
    pool = unit(centres[np.repeat(np.arange(3), 60)] + 0.1 * rng.standard_normal((180, 16)))
    return mine(pool, labeled, labels, classes=CLASSES,
                config=MineConfig(threshold=0.5, calibrate=False, ood_quantile=0,
                                  duplicate_threshold=0.99))


def test_drop_occluded_leaves_out_exactly_the_faces_below_the_labeled_quantile():
    result = mined_result()
    rng = np.random.default_rng(1)
    labeled = rng.uniform(0.8, 1.2, (200, 8, 8)).astype(np.float32)
    pool = rng.uniform(0.8, 1.2, (len(result.rows), 8, 8)).astype(np.float32)
    covered = rng.random(len(pool)) < 0.2
    pool[covered, 2:7, 1:6] *= 0.1  # most of the face hidden
    out, record = drop_occluded(result, pool, labeled, quantile=0.1, classes=CLASSES)
    scores = weakest_region(pool, reference_map(labeled))
    cut = np.quantile(weakest_region(labeled, reference_map(labeled)), 0.1, method="lower")
    gone = scores < cut
    assert record["cut"] == pytest.approx(cut) and record["window"] == 3
    assert gone[covered].all() and gone.sum() < covered.sum() + 0.2 * len(pool)
    assert np.array_equal(out.rows, result.rows[~gone])
    assert out.counts["ood_occluded"] == record["dropped"] == int(gone.sum())
    assert out.counts["mined"] == len(out.rows) == record["scored"] - record["dropped"]
    assert record["dropped_per_class"] == {c: int((result.labels[gone] == i).sum())
                                           for i, c in enumerate(CLASSES)}
    assert np.isin(out.duplicate_of[out.duplicate_of >= 0], out.rows).all()
    assert out.notes[-1].startswith(f"occlusion: {int(gone.sum())} of {len(pool)}")
    labeled_scores, checked, at = out.occlusion  # for the report's panel
    assert len(labeled_scores) == 200 and np.array_equal(checked, scores) and at == record["cut"]
    with pytest.raises(OmniferError, match="give one per mined face"):
        drop_occluded(result, pool[:-1], labeled, quantile=0.1, classes=CLASSES)


# ---------------------------------------------------------------- with a model and a pool

def test_activation_maps_are_the_norms_of_the_map_the_backbone_pools(model_dir):
    import torch

    from omnifer.models.embedder import Embedder

    embedder = Embedder(model_dir, device="cpu", batch_size=4)
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    maps = embedder.activation_maps(images)
    assert maps.shape == (6, 4, 4) and maps.dtype == np.float32
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    x = (x - embedder.mean) / embedder.std
    with torch.inference_mode():
        spatial = embedder.model.backbone[:-2](x)  # convnet: ... -> avgpool -> flatten
    assert np.allclose(maps, spatial.norm(dim=1).numpy(), atol=1e-5)
    _, norms = embedder.features(images)  # the pooled features' norm is at most the mean
    assert (norms <= maps.mean(axis=(1, 2)) + 1e-4).all()
    assert embedder.activation_maps(images[:0]).shape[0] == 0


@pytest.mark.parametrize("backbone, side", [("resnet18", 2), ("mobilenet_v3_small", 2)])
def test_every_backbone_has_activation_maps(tmp_path, backbone, side):
    from omnifer.models import ModelConfig, build_model, save_checkpoint
    from omnifer.models.embedder import Embedder

    save_checkpoint(build_model(ModelConfig(backbone=backbone, input_size=64), seed=0),
                    tmp_path / "m")
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    maps = Embedder(tmp_path / "m", device="cpu").activation_maps(images)
    assert maps.shape == (2, side, side) and (maps >= 0).all()


def test_mine_checks_the_mined_faces_for_occlusion(mined_ws, tiny_synth, run_cli):
    from omnifer.pipeline import resolve
    from omnifer.pipeline.embeddings import labeled_maps
    from omnifer.pipeline.mine import pool_maps
    from omnifer.pools import open_pool
    from omnifer.records import IndexRun
    from omnifer.workspace import Workspace

    base = ["-w", mined_ws, "mine", "--labeled", tiny_synth.labeled_toml, "--threshold", "-1",
            "--k", "3", "--score", "max", "--no-calibrate", "--device", "cpu"]
    r = run_cli.json(*base)
    manifest = json.loads((mined_ws / ".omnifer/runs" / r["run"] / "manifest.json").read_text())
    rec, counts = manifest["occlusion"], r["counts"]
    before = counts["passed"] - counts["ood_rejected"] - counts["leak_excluded"] - counts["capped"]
    assert rec["scored"] == before and counts["ood_occluded"] == rec["dropped"]
    assert counts["mined"] == before - rec["dropped"] and rec["dropped"] > 0
    assert any(line.startswith("occlusion: ") for line in manifest["summary"])
    # every face kept scores at least the cut, scored again from its pool image
    index = IndexRun.from_run(Workspace(mined_ws).latest("index"))
    table = pd.read_parquet(r["dataset"])
    ids = pd.read_parquet(index.ids).set_index("key").loc[table["key"]].reset_index()
    src = open_pool(index.pool, index.source, **index.source_options)
    maps = pool_maps(index.model, src, ids, detected=False, device="cpu")
    wsp = Workspace(mined_ws)
    data = resolve.read_data(wsp, tiny_synth.labeled_toml)
    data = data.subset(data.masks()["expression"])
    reference = reference_map(labeled_maps(wsp, data, index.model, "cpu"))
    assert (weakest_region(maps, reference) >= rec["cut"] - 1e-6).all()
    off = run_cli.json(*base, "--ood-quantile", "0")
    assert "ood_occluded" not in off["counts"]
    assert json.loads((mined_ws / ".omnifer/runs" / off["run"] / "manifest.json")
                      .read_text())["occlusion"] is None
