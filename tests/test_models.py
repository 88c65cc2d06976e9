"""Backbone registry, multitask model outputs, seeding, weights loading and checkpoints."""

from __future__ import annotations

import json
import time

import pytest
import torch

from omnifer.errors import OmniferError
from omnifer.labels import EXPRESSIONS
from omnifer.models import (
    BACKBONES,
    ModelConfig,
    MultitaskModel,
    bin_centres,
    build_backbone,
    build_model,
    load_checkpoint,
    read_model_config,
    save_checkpoint,
    va_quadrant,
)

AUS = ("AU1", "AU6", "AU12")


def tiny(**kw) -> ModelConfig:
    base = dict(backbone="convnet", input_size=32, aus=AUS)
    return ModelConfig(**{**base, **kw})


def images(n: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def one_line_error(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text and text
    return text


# ---------------------------------------------------------------- backbones

@pytest.mark.parametrize("name, dim", [
    ("convnet", 256), ("resnet18", 512), ("mobilenet_v3_small", 576),
    ("mobilenet_v3_large", 960), ("resnet50", 2048),
])
def test_backbones_map_images_to_features(name, dim):
    assert name in BACKBONES
    start = time.perf_counter()
    module, d = build_backbone(name, input_size=64)
    if name == "resnet50" and time.perf_counter() - start > 2:
        pytest.skip("resnet50 builds slowly on this machine")
    assert d == dim
    with torch.no_grad():
        out = module.eval()(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, dim)


@pytest.mark.parametrize("size", [32, 224])
def test_convnet_input_sizes(size):
    module, d = build_backbone("convnet", input_size=size)
    with torch.no_grad():
        assert module.eval()(torch.randn(1, 3, size, size)).shape == (1, d)


def test_unknown_backbone_lists_names():
    with pytest.raises(OmniferError) as exc:
        build_backbone("resnet19")
    text = one_line_error(exc)
    assert "resnet19" in text and "convnet" in text and "mobilenet_v3_large" in text
    with pytest.raises(OmniferError):
        ModelConfig(backbone="resnet19")


# ---------------------------------------------------------------- config

def test_config_normalises_and_round_trips():
    cfg = ModelConfig(backbone="convnet", aus=["au12", "AU 1"], tasks=["va", "expression"],
                      mean=[0.4, 0.5, 0.6], au_thresholds=[0.3, 0.7])
    assert cfg.aus == ("AU12", "AU1")
    assert cfg.tasks == ("expression", "va")
    assert cfg.mean == (0.4, 0.5, 0.6) and cfg.au_thresholds == (0.3, 0.7)
    data = json.loads(json.dumps(cfg.to_dict()))
    assert ModelConfig.from_dict(data) == cfg


def test_default_tasks_follow_label_spaces():
    assert ModelConfig().tasks == ("expression", "va")
    assert ModelConfig(aus=AUS).tasks == ("expression", "va", "au")
    assert ModelConfig().expressions == EXPRESSIONS


@pytest.mark.parametrize("kw, words", [
    (dict(tasks=("expression", "pose")), ["pose", "expression, va, au"]),
    (dict(tasks=("au",), aus=()), ["'au'", "AU name"]),
    (dict(tasks=()), ["empty"]),
    (dict(va_head="classes"), ["classes", "bins, regress"]),
    (dict(va_bins=1), ["va_bins=1"]),
    (dict(au_thresholds=(0.5,)), ["1 values", "3 AUs"]),
    (dict(temperature=0.0), ["temperature=0.0"]),
    (dict(input_size=8), ["input_size=8"]),
    (dict(std=(0.5, 0.5)), ["std"]),
    (dict(va_bins="many"), ["va_bins='many'"]),
])
def test_config_errors_are_one_line(kw, words):
    with pytest.raises(OmniferError) as exc:
        tiny(**kw)
    text = one_line_error(exc)
    for word in words:
        assert word in text


def test_config_from_dict_rejects_unknown_keys():
    with pytest.raises(OmniferError) as exc:
        ModelConfig.from_dict({"backbone": "convnet", "heads": 3})
    text = one_line_error(exc)
    assert "heads" in text and "va_bins" in text


# ---------------------------------------------------------------- forward

def test_forward_bins_mode():
    model = build_model(tiny(), seed=0).eval()
    with torch.no_grad():
        out = model(images())
    c = len(EXPRESSIONS)
    assert set(out) == {"embedding", "expression", "va", "va_logits", "au", "joint"}
    assert out["embedding"].shape == (3, 256)
    assert torch.allclose(out["embedding"].norm(dim=1), torch.ones(3), atol=1e-5)
    assert out["expression"].shape == (3, c)
    assert out["va_logits"].shape == (3, 2, 20)
    assert out["au"].shape == (3, len(AUS))
    assert out["joint"].shape == (3, c * 4)
    expected = (out["va_logits"].softmax(-1) * bin_centres(20)).sum(-1)
    assert torch.allclose(out["va"], expected, atol=1e-6)
    assert out["va"].abs().max() <= 1


def test_forward_regress_mode_and_subsets():
    model = build_model(tiny(va_head="regress", joint=False), seed=0).eval()
    with torch.no_grad():
        out = model(images())
    assert set(out) == {"embedding", "expression", "va", "au"}
    assert out["va"].shape == (3, 2) and out["va"].abs().max() <= 1

    model = build_model(tiny(tasks=("expression",)), seed=0).eval()
    with torch.no_grad():
        assert set(model(images())) == {"embedding", "expression"}
    model = build_model(tiny(tasks=("va", "au")), seed=0).eval()
    with torch.no_grad():
        assert set(model(images())) == {"embedding", "va", "va_logits", "au"}


def test_embedding_is_taken_before_dropout():
    model = build_model(tiny(dropout=0.9), seed=0).train()
    with torch.no_grad():
        torch.manual_seed(1)
        a = model(images())
        torch.manual_seed(2)
        b = model(images())
    assert torch.equal(a["embedding"], b["embedding"])  # dropout does not reach it
    assert not torch.equal(a["expression"], b["expression"])  # but reaches the heads


def test_bin_centres_and_quadrants():
    assert torch.allclose(bin_centres(4), torch.tensor([-0.75, -0.25, 0.25, 0.75]))
    assert torch.allclose(bin_centres(2), torch.tensor([-0.5, 0.5]))
    va = torch.tensor([[-0.5, -0.5], [-0.5, 0.0], [0.0, -0.1], [0.3, 0.7]])
    assert va_quadrant(va).tolist() == [0, 1, 2, 3]
    assert va_quadrant(va).dtype == torch.long


def test_calibrated_validates_and_sets_config():
    model = build_model(tiny(), seed=0)
    assert model.calibrated(au_thresholds=[0.2, 0.4, 0.6], temperature=1.5) is model
    assert model.config.au_thresholds == (0.2, 0.4, 0.6) and model.config.temperature == 1.5
    model.calibrated(temperature=2.0)
    assert model.config.au_thresholds == (0.2, 0.4, 0.6)
    with pytest.raises(OmniferError):
        model.calibrated(au_thresholds=[0.5])
    with pytest.raises(OmniferError):
        model.calibrated(temperature=-1)


# ---------------------------------------------------------------- seeding

def test_seed_is_deterministic_and_leaves_global_rng_alone():
    before = torch.random.get_rng_state()
    a = build_model(tiny(), seed=3).state_dict()
    b = build_model(tiny(), seed=3).state_dict()
    c = build_model(tiny(), seed=4).state_dict()
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


# ---------------------------------------------------------------- pretrained weights

@pytest.mark.parametrize("backbone", ["convnet", "resnet18"])
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_weights_load_into_backbone(tmp_path, backbone, suffix):
    source, _ = build_backbone(backbone, input_size=64)
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    if backbone == "resnet18":
        state["module.fc.weight"] = torch.zeros(1000, 512)  # a classifier is ignored
    path = tmp_path / f"backbone{suffix}"
    if suffix == ".pt":
        torch.save({"state_dict": state}, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    cfg = ModelConfig(backbone=backbone, input_size=64, tasks=("expression",))
    model = build_model(cfg, weights=path, seed=0)
    got = model.backbone.state_dict()
    for key, value in source.state_dict().items():
        assert torch.equal(got[key], value), key


def test_weights_errors(tmp_path):
    cfg = tiny(tasks=("expression",))
    with pytest.raises(OmniferError) as exc:
        build_model(cfg, weights=tmp_path / "absent.pt")
    assert "does not exist" in one_line_error(exc)
    path = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(OmniferError) as exc:
        build_model(cfg, weights=path)
    text = one_line_error(exc)
    assert str(path) in text and "convnet" in text and "0 of" in text
    source, _ = build_backbone("convnet")
    state = source.state_dict()
    state["0.weight"] = torch.zeros(32, 1, 3, 3)
    torch.save(state, path)
    with pytest.raises(OmniferError) as exc:
        build_model(cfg, weights=path)
    assert "0.weight" in one_line_error(exc)


# ---------------------------------------------------------------- checkpoints

def test_checkpoint_round_trip(tmp_path):
    model = build_model(tiny(va_bins=8), seed=0)
    model.calibrated(au_thresholds=[0.1, 0.5, 0.9], temperature=1.7)
    assert save_checkpoint(model, tmp_path / "ckpt") == tmp_path / "ckpt"
    meta = json.loads((tmp_path / "ckpt" / "model.json").read_text())
    assert meta["format"] == "omnifer.model" and meta["version"] == 1
    assert meta["parameters"] == sum(p.numel() for p in model.parameters())
    model.eval()
    x = images()
    with torch.no_grad():
        want = model(x)
    for path in ("ckpt", "ckpt/model.json", "ckpt/model.safetensors"):
        loaded = load_checkpoint(tmp_path / path)
        assert isinstance(loaded, MultitaskModel) and not loaded.training
        assert loaded.config == model.config
        assert loaded.config.temperature == 1.7
        assert loaded.config.au_thresholds == (0.1, 0.5, 0.9)
        with torch.no_grad():
            got = loaded(x)
        assert set(got) == set(want)
        for key in want:
            assert torch.equal(got[key], want[key]), key
    assert read_model_config(tmp_path / "ckpt") == model.config


def test_checkpoint_errors(tmp_path):
    model = build_model(tiny(), seed=0)
    ckpt = save_checkpoint(model, tmp_path / "ckpt")
    weights = (ckpt / "model.safetensors").read_bytes()

    with pytest.raises(OmniferError) as exc:
        load_checkpoint(tmp_path / "nowhere")
    assert "does not exist" in one_line_error(exc)

    (ckpt / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(OmniferError) as exc:
        load_checkpoint(ckpt)
    assert "unreadable" in one_line_error(exc) and "model.safetensors" in str(exc.value)
    (ckpt / "model.safetensors").write_bytes(weights)

    meta = json.loads((ckpt / "model.json").read_text())
    broken = {**meta, "config": {**meta["config"], "head_size": 3}}
    (ckpt / "model.json").write_text(json.dumps(broken))
    with pytest.raises(OmniferError) as exc:
        load_checkpoint(ckpt)
    assert "head_size" in one_line_error(exc)
    (ckpt / "model.json").write_text(json.dumps({**meta, "format": "timm"}))
    with pytest.raises(OmniferError) as exc:
        read_model_config(ckpt)
    assert "timm" in one_line_error(exc)
    (ckpt / "model.json").write_text("{not json")
    with pytest.raises(OmniferError) as exc:
        load_checkpoint(ckpt)
    assert "JSON" in one_line_error(exc)

    # weights that do not match the config (fewer expressions)
    other = {**meta, "config": {**meta["config"], "expressions": ["neutral", "happiness"]}}
    (ckpt / "model.json").write_text(json.dumps(other))
    with pytest.raises(OmniferError) as exc:
        load_checkpoint(ckpt)
    assert "heads.expression." in one_line_error(exc)
    other = {**meta, "config": {**meta["config"], "tasks": ["expression", "va"]}}
    (ckpt / "model.json").write_text(json.dumps(other))
    with pytest.raises(OmniferError) as exc:
        load_checkpoint(ckpt)
    assert "unexpected" in one_line_error(exc)

    (ckpt / "model.json").unlink()
    with pytest.raises(OmniferError) as exc:
        load_checkpoint(ckpt)
    assert "model.json is missing" in one_line_error(exc)


def test_embedding_is_standardised_with_training_statistics():
    """Raw post-ReLU features sit in one narrow cone; the embedding is centred with running
    statistics learned in training mode (not in eval mode, and a batch of one is fine)."""
    from omnifer.models.model import EmbeddingNorm

    norm = EmbeddingNorm(8)
    gen = torch.Generator().manual_seed(0)
    data = torch.rand(64, 8, generator=gen) * torch.arange(1, 9) + 3.0  # positive, offset
    raw = torch.nn.functional.normalize(data, dim=1)
    assert (raw @ raw.T).min() > 0.8  # the cone
    norm.eval()
    assert torch.allclose(norm(data), raw, atol=1e-6)  # no statistics yet: plain L2 norm
    norm.train()
    for chunk in data.split(16):
        norm(chunk)
    norm(data[:1])  # one sample: no update, no error
    assert int(norm.batches) == 4
    assert torch.allclose(norm.mean, data.mean(0), atol=1e-5)  # cumulative while young
    norm.eval()
    emb = norm(data)
    assert torch.allclose(emb.norm(dim=1), torch.ones(64), atol=1e-5)
    assert (emb @ emb.T).min() < -0.5 and emb.mean(0).norm() < 0.2  # spread over the sphere
    before = norm.mean.clone()
    norm(data * 2)
    assert torch.equal(norm.mean, before)  # eval mode never updates
