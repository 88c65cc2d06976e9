"""Model checkpoints: ``model.safetensors`` (weights) + ``model.json`` (format and config).

The JSON alone is enough to rebuild the architecture; the weights are then loaded strictly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from omnifer.artifacts import atomic_path, atomic_write_json
from omnifer.errors import OmniferError, one_line
from omnifer.models.model import ModelConfig, MultitaskModel

FORMAT = "omnifer.model"
VERSION = 1
CONFIG_FILE = "model.json"
WEIGHTS_FILE = "model.safetensors"

_FIX = "point to a checkpoint directory written by omnifer train (model.json + model.safetensors)"


def save_checkpoint(model: nn.Module, directory: str | os.PathLike) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``directory`` (atomically)."""
    from safetensors.torch import save_file

    model = _unwrap(model)
    if not isinstance(model, MultitaskModel):
        raise OmniferError(
            f"save_checkpoint needs a MultitaskModel (from build_model), got {type(model).__name__}"
        )
    directory = Path(directory)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    atomic_write_json(directory / CONFIG_FILE, {
        "format": FORMAT,
        "version": VERSION,
        "config": model.config.to_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
    })
    return directory


def read_model_config(path: str | os.PathLike) -> ModelConfig:
    """The ``ModelConfig`` of a checkpoint (directory, ``model.json`` or ``.safetensors``)."""
    config_file, _ = _files(path)
    return _read_config(config_file, path)


def load_checkpoint(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> MultitaskModel:
    """Rebuild the model from its JSON, load the weights strictly; eval mode, on ``device``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config_file, weights_file = _files(path)
    config = _read_config(config_file, path)
    if not weights_file.is_file():
        raise _unreadable(path, f"{weights_file.name} is missing")
    try:
        state = load_file(str(weights_file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise _unreadable(path, f"{weights_file.name} is damaged ({one_line(exc)})") from None
    model = MultitaskModel(config)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        what = ", ".join(
            f"{n} {label} (e.g. {keys[0]})"
            for n, label, keys in ((len(missing), "missing tensors", missing),
                                   (len(unexpected), "unexpected tensors", unexpected))
            if n
        )
        raise _unreadable(path, f"weights do not match the config: {what}")
    for key, tensor in state.items():
        if tensor.shape != own[key].shape:
            raise _unreadable(
                path, f"tensor {key} has shape {tuple(tensor.shape)}, the config expects "
                f"{tuple(own[key].shape)}"
            )
    model.load_state_dict(state, strict=True)
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError):
        raise OmniferError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    return model.to(target).eval()


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside DataParallel/DistributedDataParallel or torch.compile wrappers."""
    for attr in ("module", "_orig_mod"):
        inner = getattr(model, attr, None)
        if isinstance(inner, nn.Module):
            return _unwrap(inner)
    return model


def _files(path: str | os.PathLike) -> tuple[Path, Path]:
    """(config JSON, weights) for a checkpoint directory or either of its two files."""
    path = Path(path)
    if path.is_dir():
        return path / CONFIG_FILE, path / WEIGHTS_FILE
    if path.suffix == ".json":
        return path, path.with_suffix(".safetensors")
    if path.suffix == ".safetensors":
        return path.with_suffix(".json"), path
    if not path.exists():
        raise OmniferError(f"checkpoint {path} does not exist; {_FIX}")
    raise _unreadable(path, "not a directory, .json or .safetensors file")


def _read_config(config_file: Path, path: str | os.PathLike) -> ModelConfig:
    if not config_file.is_file():
        if not Path(path).exists():
            raise OmniferError(f"checkpoint {path} does not exist; {_FIX}")
        raise _unreadable(path, f"{config_file.name} is missing")
    try:
        meta: Any = json.loads(config_file.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _unreadable(path, f"{config_file.name} is not valid JSON ({one_line(exc)})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        seen = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise _unreadable(path, f"{config_file.name} has format {seen!r}, expected {FORMAT!r}")
    if not isinstance(meta.get("version"), int) or meta["version"] > VERSION:
        raise _unreadable(
            path, f"format version {meta.get('version')!r} is not supported (this omnifer "
            f"reads up to version {VERSION})"
        )
    try:
        return ModelConfig.from_dict(meta.get("config"))
    except OmniferError as exc:
        raise _unreadable(path, f"bad config in {config_file.name}: {one_line(exc)}") from None


def _unreadable(path: str | os.PathLike, what: str) -> OmniferError:
    return OmniferError(f"checkpoint {path} is unreadable: {what}; {_FIX}")


def load_models(path: str | Path, *, device: str | torch.device = "cpu") -> list[MultitaskModel]:
    """The models of a checkpoint directory or of a train run (every ensemble member; of
    a run with generations, the last generation's)."""
    path = Path(path)
    if (path / "model.json").is_file() or path.suffix in (".json", ".safetensors"):
        return [load_checkpoint(path, device=device)]
    generations = [p for p in (path / "generations").glob("*") if p.name.isdigit()]
    if not (path / "members").is_dir() and generations:
        path = max(generations, key=lambda p: int(p.name))
    members = sorted((path / "members").glob("*/model/model.json"),
                     key=lambda p: int(p.parent.parent.name))
    if not members:
        raise OmniferError(
            f"no model at {path}: expected model.json or members/<k>/model/ of a train run; "
            "finish `omnifer train` (or --resume it) or point at a checkpoint directory"
        )
    return [load_checkpoint(p.parent, device=device) for p in members]
