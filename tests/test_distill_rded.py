"""``rded``: real views a model selects and labels; the views; filling short classes."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from omnifer.distill import distill  # noqa: E402
from omnifer.distill.fill import fill_short_classes  # noqa: E402
from omnifer.distill.methods.rded import stitch  # noqa: E402
from omnifer.distill.views import random_views  # noqa: E402
from omnifer.errors import OmniferError  # noqa: E402


def brightness_teacher(calls=None):
    """Class 0 probability grows with the mean pixel, class 1 with darkness."""
    def teacher(x):
        if calls is not None:
            calls.append(len(x))
        b = x.mean(dim=(1, 2, 3)).numpy().astype(np.float64)
        p0 = 1 / (1 + np.exp(-20 * (b - 0.5)))
        return np.stack([p0, 1 - p0], 1)
    return teacher


def constant_images(levels, size=8):
    return np.stack([np.full((3, size, size), v, np.float32) for v in levels])


def test_rded_keeps_the_views_the_model_scores_highest_and_labels_them():
    x = constant_images([0.9, 0.2, 0.7, 0.95, 0.6, 0.1, 0.4, 0.05, 0.3, 0.35])
    y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    out = distill(x, y, n_classes=2, method="rded", images_per_class=2,
                  teacher=brightness_teacher(), options={"views": 1})
    levels = out.images.mean(axis=(1, 2, 3))
    assert out.labels.tolist() == [0, 0, 1, 1]
    assert levels == pytest.approx([0.95, 0.9, 0.05, 0.1], abs=1e-5)  # best first, per class
    assert out.soft_labels.shape == (4, 2) and np.allclose(out.soft_labels.sum(1), 1)
    assert out.soft_labels[:2, 0].min() > 0.99 and out.soft_labels[2:, 1].min() > 0.99
    assert out.method == "rded" and out.iterations == 0


def test_rded_gives_second_views_only_to_short_classes():
    x = constant_images([0.9, 0.8, 0.1, 0.2, 0.3])
    y = np.array([0, 0, 1, 1, 1])
    calls = []
    out = distill(x, y, n_classes=2, method="rded", images_per_class=1,
                  teacher=brightness_teacher(calls), options={"factor": 2, "views": 3})
    # 4 views per class, stitched 2x2 into 1 image per class: class 0 has 2 images (their 2
    # best views each), class 1 has 3 (a second view of its best image only)
    assert out.images.shape == (2, 3, 8, 8)
    assert sum(calls) == 5 * 3 + 2  # every view scored once, then the final images
    quadrants = out.images[1, 0].reshape(2, 4, 2, 4).mean(axis=(1, 3))
    assert sorted(np.round(quadrants.ravel(), 3)) == pytest.approx([0.1, 0.1, 0.2, 0.3], abs=0.02)
    # more views than --views when a class needs them: 1 image, 6 views wanted
    out = distill(x[:2], np.array([0, 1]), n_classes=2, method="rded", images_per_class=6,
                  teacher=brightness_teacher(), options={"views": 2})
    assert out.images.shape == (12, 3, 8, 8)
    with pytest.raises(OmniferError, match="does not divide"):
        distill(x, y, n_classes=2, method="rded", images_per_class=1,
                teacher=brightness_teacher(), options={"factor": 3})


def test_rded_needs_a_model_and_resumes_class_by_class(tmp_path):
    x = constant_images(np.linspace(0.05, 0.95, 12))
    y = np.repeat([0, 1], 6)
    with pytest.raises(OmniferError, match="needs a trained model"):
        distill(x, y, n_classes=2, method="rded", images_per_class=2)
    first = distill(x, y, n_classes=2, method="rded", images_per_class=2,
                    teacher=brightness_teacher(), checkpoint=tmp_path / "c.pt")
    calls = []
    again = distill(x, y, n_classes=2, method="rded", images_per_class=2,
                    teacher=brightness_teacher(calls), checkpoint=tmp_path / "c.pt")
    assert calls == [4]  # only the soft labels of the final images: no class scored again
    assert np.array_equal(first.images, again.images)
    other = distill(x, y, n_classes=2, method="rded", images_per_class=2, seed=1,
                    teacher=brightness_teacher(calls), checkpoint=tmp_path / "c.pt")
    assert sum(calls) > 4 and other.images.shape == first.images.shape  # new seed: redone


def test_stitch_tiles_views_in_reading_order():
    views = torch.stack([torch.full((3, 4, 4), v) for v in (0.1, 0.2, 0.3, 0.4)])
    img = stitch(views, 2)[0, 0]
    assert img[:2, :2].mean() == pytest.approx(0.1) and img[:2, 2:].mean() == pytest.approx(0.2)
    assert img[2:, :2].mean() == pytest.approx(0.3) and img[2:, 2:].mean() == pytest.approx(0.4)


def test_random_views_keep_the_image_first_and_stay_in_range():
    x = torch.rand(3, 3, 16, 16)
    v = random_views(x, 4, scale=(0.3, 0.6), gen=torch.Generator().manual_seed(0))
    assert v.shape == (3, 4, 3, 16, 16) and torch.allclose(v[:, 0], x, atol=1e-5)
    assert not torch.allclose(v[:, 1], x, atol=1e-2) and 0 <= v.min() and v.max() <= 1


def test_fill_short_classes_adds_views_up_to_the_request():
    x = np.random.default_rng(0).random((7, 3, 8, 8)).astype(np.float32)
    y = np.array([0, 0, 0, 0, 1, 2, 2])
    fx, fy, added = fill_short_classes(x, y, 3, seed=0)
    assert added == {1: 2, 2: 1} and np.bincount(fy).tolist() == [4, 3, 3]
    assert np.array_equal(fx[:7], x) and fx.shape == (10, 3, 8, 8) and fx.dtype == np.float32
    assert 0 <= fx.min() and fx.max() <= 1
    same = fill_short_classes(x, y, 1)
    assert same[0] is x and same[2] == {}


@pytest.mark.slow
def test_default_distill_is_rded_at_the_models_size_and_fills_short_classes(mined_ws, run_cli):
    import pandas as pd

    from omnifer.data import LabeledSet
    from omnifer.workspace import Workspace

    ws = Workspace(mined_ws)
    mine = ws.latest("mine")
    mined = LabeledSet.load(mine.output("dataset"))
    counts = mined.table["expression"].value_counts()
    ipc = int(counts.min()) + 1  # the smallest class is one short
    r = run_cli.json("-w", mined_ws, "distill", "--images-per-class", ipc, "--device", "cpu")
    assert r["method"] == "rded" and r["model"] == mine.config["model"]
    assert 0 <= r["agreement"] <= 1
    short = mined.expressions[int(counts.idxmin())]
    assert r["filled"][short] == {"images": ipc - 1, "views_added": 1}
    table = pd.read_parquet(r["dataset"])
    assert len(table) == ipc * len(counts)
    soft = table[[c for c in table.columns if c.startswith("soft_")]].to_numpy()
    assert np.allclose(soft.sum(1), 1, atol=1e-4)
    assert (soft.argmax(1) == table["expression"].to_numpy()).mean() == pytest.approx(
        r["agreement"])  # the stored labels are the model's
    from PIL import Image
    image = LabeledSet.load(r["dataset"]).table["image"][0]
    assert Image.open(image).size == (32, 32)  # the model's input size
    code, _, err = run_cli("-w", mined_ws, "distill", "--images-per-class", 10_000,
                           "--device", "cpu")
    assert code != 0 and "more than the largest class" in err and len(err.strip().splitlines()) == 1


def test_rded_spread_keeps_views_evenly_over_the_scores_the_model_agrees_with():
    x = constant_images([0.9, 0.2, 0.7, 0.95, 0.6, 0.55, 0.4, 0.1, 0.3])
    y = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1])
    out = distill(x, y, n_classes=2, method="rded", images_per_class=3,
                  teacher=brightness_teacher(), options={"views": 1, "select": "spread"})
    levels = out.images.mean(axis=(1, 2, 3))
    # class 0: the model agrees with 0.95, 0.9, 0.7, 0.6, 0.55 (not 0.4, 0.2): first, middle,
    # last; class 1 has 2 images (fewer than 3), so each gives its best view, then a second
    assert levels[:3] == pytest.approx([0.95, 0.7, 0.55], abs=1e-5)
    top = distill(x, y, n_classes=2, method="rded", images_per_class=3,
                  teacher=brightness_teacher(), options={"views": 1})
    assert top.images.mean(axis=(1, 2, 3))[:3] == pytest.approx([0.95, 0.9, 0.7], abs=1e-5)
    with pytest.raises(OmniferError, match="select 'best' is unknown"):
        distill(x, y, n_classes=2, method="rded", images_per_class=1,
                teacher=brightness_teacher(), options={"select": "best"})


def test_rded_candidates_scores_only_that_many_random_images_per_class():
    x = constant_images(np.linspace(0.55, 0.99, 40).tolist() + [0.1, 0.2, 0.3])
    y = np.array([0] * 40 + [1] * 3)
    calls = []
    out = distill(x, y, n_classes=2, method="rded", images_per_class=2,
                  teacher=brightness_teacher(calls), options={"views": 1, "candidates": 8})
    # class 0: 8 of its 40 images scored; class 1 has fewer than 8: all 3; then the final 4
    assert sum(calls) == 8 + 3 + 4
    levels = out.images.mean(axis=(1, 2, 3))
    assert levels[0] >= levels[1] and levels[2:] == pytest.approx([0.1, 0.2], abs=1e-5)
    again = distill(x, y, n_classes=2, method="rded", images_per_class=2,
                    teacher=brightness_teacher(), options={"views": 1, "candidates": 8})
    assert np.array_equal(out.images, again.images)  # the draw follows the seed
    # every image scored: always the brightest two; 8 random ones: the best two of the draw
    best = [distill(x, y, n_classes=2, method="rded", images_per_class=2, seed=s,
                    teacher=brightness_teacher(), options={"views": 1, "candidates": c}
                    ).images[0].mean() for s in range(5) for c in (0, 8)]
    assert best[0::2] == pytest.approx([0.99] * 5) and min(best[1::2]) < 0.98
    with pytest.raises(OmniferError, match="rded candidates is -1"):
        distill(x, y, n_classes=2, method="rded", images_per_class=1,
                teacher=brightness_teacher(), options={"candidates": -1})
