"""Dataset distillation: methods, DSA, exact trajectory gradients, resume, coresets, protocol."""

import itertools
import weakref

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from omnifer.distill import (CORESETS, METHODS, DistillConfig,
                             build_convnet, distill, dsa, evaluate_sets, functional_forward,
                             herding, k_center, random_subset, select_coreset,
                             trajectory_gradient)
from omnifer.distill.networks import default_depth, flat_params
from omnifer.errors import ConfigMismatchError, OmniferError

K, PER_CLASS, SIZE = 4, 20, 16
FAST = {  # tiny settings per method: a few seconds each on one core
    "dm": {"options": {"batch_real": 8}},
    "gm": {"options": {"batch_real": 8, "outer_loop": 2, "inner_loop": 1}},
    "tm": {"options": {"syn_steps": 3, "expert_epochs": 1, "max_start_epoch": 2,
                       "n_experts": 1, "expert_train_epochs": 4}, "soft_labels": True},
}


#: the methods that learn pixels (rded selects real views: tests/test_distill_rded.py)
LEARNING = sorted(name for name, spec in METHODS.items() if not getattr(spec, "needs_teacher",
                                                                        False))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    """4 classes x 20 images of 3x16x16: a coloured square whose colour and place give the class."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(K), PER_CLASS)
    x = (rng.random((K * PER_CLASS, 3, SIZE, SIZE)) * 0.3).astype(np.float32)
    for i, c in enumerate(y):
        r, s = 2 + 6 * (c % 2), 2 + 6 * (c // 2)
        x[i, c % 3, r:r + 6, s:s + 6] += 0.6
    return x, y


def run(data, method, **kw):
    x, y = data
    args = {"n_classes": K, "method": method, "images_per_class": 2, "iterations": 4,
            "width": 16, "device": "cpu", **FAST[method], **kw}
    return distill(x, y, **args)


# ---------------------------------------------------------------- networks

def test_convnet_depth_seed_and_functional_forward():
    assert [default_depth(s) for s in (8, 16, 32, 64, 112, 128)] == [1, 2, 3, 4, 4, 5]
    a = build_convnet(3, 32, 7, seed=3, width=8, mean=[0.5] * 3, std=[0.2] * 3)
    b = build_convnet(3, 32, 7, seed=3, width=8, mean=[0.5] * 3, std=[0.2] * 3)
    assert torch.equal(flat_params(a), flat_params(b))
    assert not torch.equal(flat_params(a), flat_params(build_convnet(3, 32, 7, seed=4, width=8)))
    x = torch.rand(2, 3, 32, 32)
    assert a(x).shape == (2, 7) and a(x, embed=True).shape == (2, 8 * 4 * 4)
    torch.testing.assert_close(functional_forward(a, flat_params(a), x), a(x))


# ---------------------------------------------------------------- augmentation

def test_dsa_is_siamese_and_differentiable():
    a, b = torch.rand(3, 3, 16, 16), torch.rand(5, 3, 16, 16)
    both = dsa(torch.cat([a, b]), seed=7)
    torch.testing.assert_close(both, torch.cat([dsa(a, seed=7), dsa(b, seed=7)]))
    assert not torch.allclose(dsa(a, seed=7), dsa(a, seed=8))
    assert not torch.allclose(dsa(a, seed=7), a)
    # per image: two copies of one image get different transforms
    twins = dsa(torch.cat([a[:1], a[:1]]), seed=7, shared=False)
    assert not torch.allclose(twins[0], twins[1])
    for op in ("color", "crop", "cutout", "flip", "scale", "rotate"):
        x = torch.rand(2, 3, 16, 16, requires_grad=True)
        dsa(x, seed=1, strategy=op).square().sum().backward()
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0, op
    with pytest.raises(OmniferError, match="unknown augmentation 'blur'"):
        dsa(a, seed=0, strategy="color_blur")


# ---------------------------------------------------------------- methods

@pytest.mark.parametrize("method", LEARNING)
def test_method_reduces_its_loss(data, method):
    result = run(data, method, iterations=16, init="noise", lr_images=0.05)
    h = np.asarray(result.history)
    assert h.shape == (16,) and np.isfinite(h).all()
    assert h[-4:].mean() < h[:4].mean(), h
    assert result.images.shape == (K * 2, 3, SIZE, SIZE) and result.images.dtype == np.float32
    assert 0.0 <= result.images.min() and result.images.max() <= 1.0
    np.testing.assert_array_equal(result.labels, np.repeat(np.arange(K), 2))
    if method == "tm":
        assert result.soft_labels.shape == (K * 2, K)
        np.testing.assert_allclose(result.soft_labels.sum(1), 1.0, rtol=1e-5)


def test_real_init_starts_from_class_samples(data):
    x, y = data
    result = run(data, "dm", iterations=0)
    for img, c in zip(result.images, result.labels):
        assert any(np.array_equal(img, r) for r in x[y == c])


@pytest.mark.parametrize("soft", [False, True])
def test_trajectory_gradient_equals_full_unroll(soft):
    """The step-by-step adjoint gives autograd's gradient through the whole unrolled student."""
    torch.manual_seed(0)
    net = build_convnet(3, 8, 3, seed=1, width=4, mean=[0.4] * 3, std=[0.3] * 3).double()
    start = flat_params(net)
    target = start + 0.05 * torch.randn_like(start)
    images = torch.rand(6, 3, 8, 8, dtype=torch.float64)
    labels = (torch.randn(6, 3, dtype=torch.float64) if soft
              else torch.tensor([0, 0, 1, 1, 2, 2]))
    gen = torch.Generator().manual_seed(0)
    steps = [(torch.randperm(6, generator=gen)[:4], 100 + i) for i in range(5)]
    lr, strategy = 0.2, "color_crop_cutout_scale_rotate"

    loss, g_x, g_y, g_lr = trajectory_gradient(net, start, target, images, labels, lr, steps,
                                               strategy)

    x = images.clone().requires_grad_(True)
    y = labels.clone().requires_grad_(True) if soft else labels
    lr_t = torch.tensor(lr, dtype=torch.float64, requires_grad=True)
    theta = start.clone().requires_grad_(True)
    for idx, seed in steps:
        out = functional_forward(net, theta, dsa(x[idx], seed, strategy))
        step_loss = F.cross_entropy(out, y[idx].softmax(1) if soft else y[idx])
        (g,) = torch.autograd.grad(step_loss, theta, create_graph=True)
        theta = theta - lr_t * g
    naive = (theta - target).square().sum() / (start - target).square().sum()
    naive.backward()

    assert loss == pytest.approx(float(naive.detach()), rel=1e-10)
    torch.testing.assert_close(g_x, x.grad, rtol=1e-8, atol=1e-12)
    assert g_lr == pytest.approx(float(lr_t.grad), rel=1e-8)
    if soft:
        torch.testing.assert_close(g_y, y.grad, rtol=1e-8, atol=1e-12)
    else:
        assert g_y is None
    # the second-order terms matter: dropping them (treating each theta_i as a constant) differs
    first_order = torch.zeros_like(images)
    thetas = [start.clone()]
    for idx, seed in steps:
        th = thetas[-1].clone().requires_grad_(True)
        out = functional_forward(net, th, dsa(images[idx], seed, strategy))
        (g,) = torch.autograd.grad(F.cross_entropy(out, labels[idx].softmax(1) if soft
                                                   else labels[idx]), th)
        thetas.append((thetas[-1] - lr * g).detach())
    lam = 2 * (thetas[-1] - target) / (start - target).square().sum()
    for (idx, seed), th in zip(steps, thetas[:-1]):
        xi = images.clone().requires_grad_(True)
        th = th.clone().requires_grad_(True)
        out = functional_forward(net, th, dsa(xi[idx], seed, strategy))
        (g,) = torch.autograd.grad(F.cross_entropy(out, labels[idx].softmax(1) if soft
                                                   else labels[idx]), th, create_graph=True)
        first_order += torch.autograd.grad((g * lam).sum() * -lr, xi)[0]
    assert not torch.allclose(first_order, g_x, rtol=1e-3, atol=0)


class _Saved:
    def __init__(self, tensor):
        self.tensor = tensor


class _SavedTensorPeak:
    """Peak bytes of tensors saved for backward that are alive at once (autograd graph memory)."""

    def __init__(self):
        self.alive = self.peak = 0

    def _pack(self, tensor):
        size = tensor.numel() * tensor.element_size()
        self.alive += size
        self.peak = max(self.peak, self.alive)
        saved = _Saved(tensor)
        weakref.finalize(saved, self._free, size)  # runs when the graph lets go of it
        return saved

    def _free(self, size):
        self.alive -= size

    def __enter__(self):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda s: s.tensor)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)


def test_trajectory_graph_memory_does_not_grow_with_steps():
    net = build_convnet(3, 8, 3, seed=1, width=8)
    start = flat_params(net)
    target = start + 0.05
    images, labels = torch.rand(6, 3, 8, 8), torch.tensor([0, 0, 1, 1, 2, 2])

    def peak(n_steps, naive=False):
        steps = [(torch.arange(6), i) for i in range(n_steps)]
        with _SavedTensorPeak() as p:
            if naive:
                theta = start.clone().requires_grad_(True)
                x = images.clone().requires_grad_(True)
                for idx, seed in steps:
                    out = functional_forward(net, theta, dsa(x[idx], seed))
                    (g,) = torch.autograd.grad(F.cross_entropy(out, labels[idx]), theta,
                                               create_graph=True)
                    theta = theta - 0.01 * g
                ((theta - target) ** 2).sum().backward()
            else:
                trajectory_gradient(net, start, target, images, labels, 0.01, steps, "color_crop")
        return p.peak

    assert peak(8) == peak(2)
    assert peak(8, naive=True) > 3 * peak(2, naive=True)  # the probe sees a growing graph


# ---------------------------------------------------------------- checkpoints

@pytest.mark.parametrize("method", LEARNING)
def test_resume_equals_uninterrupted(data, method, tmp_path):
    whole = run(data, method, iterations=5)
    path = tmp_path / "state.pt"

    class Stop(Exception):
        pass

    def stop_at_3(done, total, info):
        if done == 3:
            raise Stop

    with pytest.raises(Stop):
        run(data, method, iterations=5, checkpoint=path, checkpoint_every=2, progress=stop_at_3)
    assert path.exists()
    resumed = run(data, method, iterations=5, checkpoint=path, checkpoint_every=2)
    np.testing.assert_array_equal(resumed.images, whole.images)
    assert resumed.history == whole.history
    if whole.soft_labels is not None:
        np.testing.assert_array_equal(resumed.soft_labels, whole.soft_labels)
    # a finished checkpoint is the result itself
    again = run(data, method, iterations=5, checkpoint=path, checkpoint_every=2)
    np.testing.assert_array_equal(again.images, whole.images)


def test_checkpoint_from_other_arguments_is_refused(data, tmp_path):
    path = tmp_path / "state.pt"
    run(data, "dm", iterations=2, checkpoint=path)
    with pytest.raises(ConfigMismatchError, match="other arguments"):
        run(data, "dm", iterations=2, checkpoint=path, lr_images=0.5)
    with pytest.raises(OmniferError, match="beyond iterations=1"):
        run(data, "dm", iterations=1, checkpoint=path)


# ---------------------------------------------------------------- coresets

def test_coresets_sizes_and_classes():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [10, 7, 9])
    emb = rng.normal(size=(labels.size, 5))
    for name in CORESETS:
        idx = select_coreset(name, emb, labels, 3, seed=1)
        assert idx.dtype == np.int64 and idx.size == 9 and np.unique(idx).size == 9
        np.testing.assert_array_equal(labels[idx], np.repeat([0, 1, 2], 3))
    np.testing.assert_array_equal(random_subset(None, labels, 3, seed=5),
                                  random_subset(None, labels, 3, seed=5))
    with pytest.raises(OmniferError, match="herding needs embeddings"):
        herding(None, labels, 2)
    with pytest.raises(OmniferError, match="unknown coreset 'greedy'.*random, herding, k-center"):
        select_coreset("greedy", emb, labels, 2)


def test_herding_picks_the_closest_to_the_mean_first():
    emb = np.array([[0.0, 0.0], [10.0, 0.0], [4.0, 1.0], [-10.0, 0.0], [3.0, 3.0]])
    labels = np.zeros(5, dtype=np.int64)
    mean = emb.mean(0)
    idx = herding(emb, labels, 3)
    assert idx[0] == np.argmin(((emb - mean) ** 2).sum(1))
    # then the pick that brings the running mean closest to the class mean
    best = min((j for j in range(5) if j != idx[0]),
               key=lambda j: ((emb[[idx[0], j]].mean(0) - mean) ** 2).sum())
    assert idx[1] == best


def test_k_center_covers_the_clusters():
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0]])
    emb = np.concatenate([c + rng.normal(size=(8, 2)) for c in centres])
    labels = np.zeros(len(emb), dtype=np.int64)
    idx = k_center(emb, labels, 3)
    assert sorted(i // 8 for i in idx) == [0, 1, 2]
    # farthest-first is a 2-approximation of the best cover radius (found by brute force)
    def radius(sel):
        return np.sqrt(((emb[:, None] - emb[list(sel)][None]) ** 2).sum(-1)).min(1).max()
    best = min(radius(sel) for sel in itertools.combinations(range(len(emb)), 3))
    assert radius(idx) <= 2 * best


# ---------------------------------------------------------------- protocol

def test_protocol_returns_per_seed_numbers(data):
    x, y = data
    one_hot = np.eye(K, dtype=np.float32)[y[::10]]
    sets = {"few": (x[::10], y[::10]), "soft": (x[::10], y[::10], one_hot)}
    out = evaluate_sets(sets, (x, y), n_classes=K, seeds=2, epochs=3, width=8, device="cpu")
    assert set(out) == {"few", "soft"}
    for r in out.values():
        assert len(r["accuracy"]) == 2 and len(r["macro_f1"]) == 2
        assert all(0.0 <= a <= 1.0 for a in r["accuracy"])
        assert r["mean"] == pytest.approx(np.mean(r["accuracy"]))
        assert r["std"] == pytest.approx(np.std(r["accuracy"]))
        assert r["seconds"] > 0
    # hard labels and their one-hot probabilities train the same networks
    assert out["few"]["accuracy"] == pytest.approx(out["soft"]["accuracy"])


# ---------------------------------------------------------------- errors

def test_errors_are_one_line_omnifer_errors(data):
    x, y = data
    cases = [
        ({"images_per_class": 0}, "images_per_class is 0"),
        ({"images_per_class": 21}, "exceeds the 20 images of class 0"),
        ({"method": "kip"},
         "unknown distillation method 'kip'; choose one of: dm, gm, rded, sre2l, tm"),
        ({"options": {"bogus": 1}}, "unknown option 'bogus'"),
        ({"soft_labels": True}, "does not learn labels"),
        ({"init": "zeros"}, "unknown init 'zeros'"),
    ]
    for kwargs, message in cases:
        with pytest.raises(OmniferError, match=message) as err:
            distill(x, y, n_classes=K, **{"iterations": 1, **kwargs})
        assert "\n" not in str(err.value)
    y_small = y.copy()
    y_small[:15] = 1  # class 0 keeps 5 images
    with pytest.raises(OmniferError, match="exceeds the 5 images of class 0"):
        distill(x, y_small, n_classes=K, images_per_class=6)
    with pytest.raises(OmniferError, match=r"labels hold class 4, outside \[0, 4\)"):
        distill(x, np.where(y == 3, 4, y), n_classes=K)
    with pytest.raises(OmniferError, match=r"labels hold class -1"):
        distill(x, y - 1, n_classes=K)
    with pytest.raises(OmniferError, match="scale them to"):
        distill(x * 255, y, n_classes=K)
    with pytest.raises(OmniferError, match="80 images but 79 labels"):
        distill(x, y[:-1], n_classes=K)


@pytest.mark.parametrize("method", ["dm", "gm"])
def test_a_non_finite_loss_stops_the_distillation_with_one_line(data, method, tmp_path):
    ckpt = tmp_path / "state.pt"
    with pytest.raises(OmniferError, match=rf"{method} distillation .* at iteration 1 of 4: "
                                           r"the synthetic images diverged; lower --lr-images"
                       ) as err:
        run(data, method, lr_images=float("nan"), checkpoint=ckpt, checkpoint_every=1)
    assert "\n" not in str(err.value)
    assert not ckpt.exists()  # no state with NaN images is saved
    with pytest.raises(OmniferError, match=rf"{method} distillation loss is nan at iteration [12]"):
        run(data, method, lr_images=float("nan"))


# ---------------------------------------------------------------- configs

def test_distill_config_defaults_and_validation(tmp_path):
    c = DistillConfig()
    assert (c.images_per_class, c.method, c.size, c.factor, c.views, c.iterations, c.lr_images,
            c.soft_labels, c.width, c.batch_real, c.with_labeled, c.seed, c.device) == (
        10, "rded", None, 1, 5, None, None, False, None, None, False, 0, "auto")
    assert c.distill_kwargs()["options"] == {"factor": 1, "views": 5, "select": "top",
                                            "candidates": 0}
    assert "options" not in c.replace(method="dm").distill_kwargs()
    assert DistillConfig.section == "distill" and c.replace(width=None) == c
    path = tmp_path / "omnifer.toml"
    path.write_text('[distill]\nmethod = "gm"\nimages_per_class = 2\nlr_images = 0.5\n')
    assert DistillConfig.from_toml(path) == DistillConfig(method="gm", images_per_class=2,
                                                          lr_images=0.5)
    cases = [
        ({"images_per_class": 0}, "images_per_class is 0; use an integer of at least 1"),
        ({"images_per_class": "ten"}, "images_per_class is 'ten'"),
        ({"method": "kip"},
         "unknown distillation method 'kip'; choose one of: dm, gm, rded, sre2l, tm"),
        ({"size": 1}, "size is 1; use an integer of at least 2"),
        ({"iterations": 0, "method": "dm"}, "iterations is 0"),
        ({"lr_images": 0.0, "method": "dm"}, "lr_images is 0.0; use a finite number above 0"),
        ({"lr_images": float("inf"), "method": "dm"}, "lr_images is inf"),
        ({"lr_images": float("nan"), "method": "dm"}, "lr_images is nan"),
        ({"width": 0}, "width is 0"),
        ({"batch_real": -1}, "batch_real is -1"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
        ({"soft_labels": True, "method": "dm"}, "method 'dm' does not learn labels"),
        ({"factor": 0}, "factor is 0"),
        ({"views": 0}, "views is 0"),
        ({"select": "best"}, "rded select 'best' is unknown; use one of top, spread"),
        ({"candidates": -1}, "candidates is -1; use an integer of at least 0"),
        ({"candidates": 5, "images_per_class": 10}, "candidates is 5, fewer than the 10 images"),
        ({"candidates": 30, "images_per_class": 10, "factor": 2}, "fewer than the 40 images"),
        ({"iterations": 5}, "rded selects real views and learns no pixels"),
        ({"lr_images": 0.01}, "rded selects real views"),
    ]
    for kwargs, message in cases:
        with pytest.raises(OmniferError, match=message) as err:
            DistillConfig(**kwargs)
        assert "\n" not in str(err.value)
    DistillConfig(size=2, iterations=1, lr_images=1e-4, width=1, batch_real=1, method="tm",
                  soft_labels=True)


def test_distill_config_resolved_fills_device_defaults():
    dm = DistillConfig(method="dm")
    assert dm.resolved(gpu=False) == dm.replace(width=32, batch_real=64, iterations=500)
    assert dm.resolved(gpu=True) == dm.replace(width=128, batch_real=128)
    assert DistillConfig().resolved(gpu=False).iterations is None  # rded has none
    for method in ("gm", "tm"):  # only dm shortens its run on CPU
        assert DistillConfig(method=method).resolved(gpu=False).iterations is None
    given = DistillConfig(method="dm", width=8, batch_real=4, iterations=7)
    assert given.resolved(gpu=False) == given == given.resolved(gpu=True)


def test_distill_takes_the_config_values(data):
    x, y = data
    config = DistillConfig(method="dm", images_per_class=2, iterations=2, width=16,
                           batch_real=8, device="cpu")
    kwargs = config.distill_kwargs()
    assert "size" not in kwargs and "with_labeled" not in kwargs and "lr_images" not in kwargs
    a = distill(x, y, n_classes=K, **kwargs)
    b = distill(x, y, n_classes=K, images_per_class=2, iterations=2, width=16, device="cpu",
                options={"batch_real": 8})
    np.testing.assert_array_equal(a.images, b.images)
    assert a.history == b.history
