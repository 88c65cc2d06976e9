"""The multitask FER network: a backbone, dropout and linear heads, built from ``ModelConfig``.

``MultitaskModel.forward`` returns a dict of tensors by name:

- ``embedding`` [B, D]: backbone features (before dropout) standardised with running
  statistics of the training data (``EmbeddingNorm``), then L2-normalised: centred
  embeddings spread over the sphere, so cosine thresholds mean the same across models
  (raw post-ReLU features all lie in one narrow cone, where unrelated faces have cosine 0.9);
- ``expression`` [B, C]: expression logits;
- ``va`` [B, 2]: valence/arousal in [-1, 1];
- ``va_logits`` [B, 2, bins]: per-dimension bin logits (``va_head="bins"`` only);
- ``au`` [B, A]: action-unit logits;
- ``joint`` [B, C * 4]: logits over expression x valence/arousal quadrant
  (class ``expression * 4 + quadrant``, see :func:`va_quadrant`).

A key is present only when its task is in ``config.tasks``. Logits are raw: ``temperature``
and ``au_thresholds`` are calibration values carried in the config for whoever turns logits
into probabilities and decisions.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omnifer.errors import OmniferError
from omnifer.labels import EXPRESSIONS, TASKS, au_name
from omnifer.models.backbones import build_backbone, check_backbone_name

log = logging.getLogger(__name__)

VA_HEADS: tuple[str, ...] = ("bins", "regress")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture, label spaces, preprocessing and calibration of a ``MultitaskModel``."""

    backbone: str = "resnet18"
    expressions: tuple[str, ...] = EXPRESSIONS
    aus: tuple[str, ...] = ()
    #: ``None``: every task the label spaces allow (``au`` only when ``aus`` is non-empty).
    tasks: tuple[str, ...] | None = None
    va_head: str = "bins"
    va_bins: int = 20
    joint: bool = True
    input_size: int = 112
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    alignment: str = "none"
    dropout: float = 0.1
    #: Per-AU decision thresholds on probabilities, in the order of ``aus``.
    au_thresholds: tuple[float, ...] | None = None
    #: Temperature that divides the expression logits before a softmax.
    temperature: float = 1.0

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        put("backbone", check_backbone_name(str(self.backbone)))
        put("expressions", _names(self.expressions, "expression"))
        put("aus", _au_list(self.aus))
        put("tasks", _tasks(self.tasks, has_aus=bool(self.aus)))
        if "expression" in self.tasks and not self.expressions:
            raise OmniferError("task 'expression' needs at least one expression name; set expressions")
        if "au" in self.tasks and not self.aus:
            raise OmniferError(
                "task 'au' needs at least one AU name; set aus (e.g. AU1, AU12) "
                "or drop 'au' from tasks"
            )
        put("va_head", str(self.va_head))
        if self.va_head not in VA_HEADS:
            raise OmniferError(
                f"unknown va_head {self.va_head!r}; choose one of: {', '.join(VA_HEADS)}"
            )
        put("va_bins", _number(self.va_bins, "va_bins", int))
        if self.va_bins < 2:
            raise OmniferError(f"va_bins={self.va_bins} is too small; use 2 or more (default 20)")
        put("joint", _flag(self.joint, "joint"))
        put("input_size", _number(self.input_size, "input_size", int))
        if self.input_size < 16:
            raise OmniferError(
                f"input_size={self.input_size} is too small; use 16 pixels or more (default 112)"
            )
        put("mean", _floats(self.mean, "mean", length=3))
        put("std", _floats(self.std, "std", length=3))
        if min(self.std) <= 0:
            raise OmniferError(f"std={self.std} must be positive in every channel")
        put("alignment", str(self.alignment))
        put("dropout", _number(self.dropout, "dropout", float))
        if not 0.0 <= self.dropout < 1.0:
            raise OmniferError(f"dropout={self.dropout} must lie in [0, 1)")
        if self.au_thresholds is not None:
            put("au_thresholds", _floats(self.au_thresholds, "au_thresholds"))
            if len(self.au_thresholds) != len(self.aus):
                raise OmniferError(
                    f"au_thresholds has {len(self.au_thresholds)} values but there are "
                    f"{len(self.aus)} AUs ({', '.join(self.aus) or 'none'}); give one per AU"
                )
            if any(not 0.0 <= t <= 1.0 for t in self.au_thresholds):
                raise OmniferError(
                    f"au_thresholds={self.au_thresholds} must be probabilities in [0, 1]"
                )
        put("temperature", _number(self.temperature, "temperature", float))
        if not self.temperature > 0:
            raise OmniferError(f"temperature={self.temperature} must be positive (default 1.0)")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (tuples become lists); :meth:`from_dict` reads it back."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in fields(self)
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Build a config from a dict such as :meth:`to_dict` wrote; unknown keys are refused."""
        if not isinstance(data, Mapping):
            raise OmniferError(
                f"a model config must be a JSON object, got {type(data).__name__}"
            )
        names = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in data if k not in names)
        if unknown:
            raise OmniferError(
                f"unknown model config key(s) {', '.join(unknown)}; valid keys are "
                f"{', '.join(names)}"
            )
        return cls(**dict(data))


def _tasks(value: Any, *, has_aus: bool) -> tuple[str, ...]:
    if value is None:
        return TASKS if has_aus else tuple(t for t in TASKS if t != "au")
    given = (value,) if isinstance(value, str) else tuple(value)
    unknown = [t for t in given if t not in TASKS]
    if unknown:
        raise OmniferError(
            f"unknown task {unknown[0]!r} in tasks; choose from: {', '.join(TASKS)}"
        )
    if not given:
        raise OmniferError(f"tasks is empty; give at least one of: {', '.join(TASKS)}")
    return tuple(t for t in TASKS if t in given)


def _names(value: Any, what: str) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else tuple(str(v).strip() for v in value)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise OmniferError(f"{what} name(s) {', '.join(dupes)} appear twice; list each once")
    return names


def _au_list(value: Any) -> tuple[str, ...]:
    items = (value,) if isinstance(value, str) else tuple(value)
    return _names(tuple(au_name(v) for v in items), "AU")


def _number(value: Any, name: str, kind: type) -> Any:
    try:
        if isinstance(value, bool) or (kind is int and float(value) != int(value)):
            raise ValueError(value)
        return kind(value)
    except (TypeError, ValueError, OverflowError):
        raise OmniferError(
            f"model config {name}={value!r} is not a valid {kind.__name__}"
        ) from None


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    raise OmniferError(f"model config {name}={value!r} must be true or false")


def _floats(value: Any, name: str, *, length: int | None = None) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise OmniferError(f"model config {name}={value!r} must be a list of numbers") from None
    if length is not None and len(out) != length:
        raise OmniferError(
            f"model config {name}={value!r} needs {length} values (one per RGB channel)"
        )
    return out


def bin_centres(n_bins: int) -> Tensor:
    """Centres of ``n_bins`` equal bins over [-1, 1]: ``-1 + (2k + 1) / n``."""
    return -1.0 + (2.0 * torch.arange(n_bins, dtype=torch.float32) + 1.0) / n_bins


def va_quadrant(va: Tensor) -> Tensor:
    """Quadrant of each valence/arousal pair ``[B, 2]``: ``2 * (v >= 0) + (a >= 0)``."""
    return 2 * (va[:, 0] >= 0).long() + (va[:, 1] >= 0).long()


class EmbeddingNorm(nn.Module):
    """Standardises features with a running mean and variance, then L2-normalises them.

    The statistics are updated (without gradient) on every forward in training mode: a
    cumulative average over the first ``1 / momentum`` batches, an exponential one after.
    They only shape the embedding; the heads see the raw features.
    """

    def __init__(self, dim: int, momentum: float = 0.01, eps: float = 1e-5) -> None:
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("batches", torch.zeros((), dtype=torch.long))

    def forward(self, features: Tensor) -> Tensor:
        if self.training and len(features) > 1:
            with torch.no_grad():
                mean, var = self.batch_moments(features.detach().float())
                w = max(self.momentum, 1.0 / float(self.batches + 1))
                self.mean.lerp_(mean, w)
                self.var.lerp_(var, w)
                self.batches += 1
        z = (features.float() - self.mean) * torch.rsqrt(self.var + self.eps)
        return F.normalize(z, dim=1).to(features.dtype)

    @staticmethod
    def batch_moments(f: Tensor) -> tuple[Tensor, Tensor]:
        """The batch's mean and biased variance per feature (data-parallel training
        replaces it with the moments over every process's rows)."""
        return f.mean(0), f.var(0, unbiased=False)


class MultitaskModel(nn.Module):
    """Backbone + dropout + one linear head per task; see the module docstring for outputs."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone, self.embedding_dim = build_backbone(
            config.backbone, input_size=config.input_size
        )
        self.embedding_norm = EmbeddingNorm(self.embedding_dim)
        self.dropout = nn.Dropout(config.dropout)
        dim, tasks = self.embedding_dim, config.tasks
        heads: dict[str, nn.Module] = {}
        if "expression" in tasks:
            heads["expression"] = nn.Linear(dim, len(config.expressions))
        if "va" in tasks:
            bins = config.va_bins if config.va_head == "bins" else 1
            heads["va"] = nn.Linear(dim, 2 * bins)
        if "au" in tasks:
            heads["au"] = nn.Linear(dim, len(config.aus))
        if self.has_joint:
            heads["joint"] = nn.Linear(dim, 4 * len(config.expressions))
        self.heads = nn.ModuleDict(heads)
        self.register_buffer("va_centres", bin_centres(config.va_bins), persistent=False)

    @property
    def has_joint(self) -> bool:
        """True when the expression x valence/arousal-quadrant head is present."""
        tasks = self.config.tasks
        return self.config.joint and "expression" in tasks and "va" in tasks

    def features(self, x: Tensor) -> Tensor:
        """Backbone features [B, D] of images ``x``: what the embedding and the heads read."""
        return self.backbone(x).flatten(1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = self.features(x)
        return {"embedding": self.embedding_norm(features),
                **self.head_outputs(self.dropout(features))}

    def head_outputs(self, h: Tensor) -> dict[str, Tensor]:
        """Every head's output on backbone features ``h`` (after any dropout)."""
        out: dict[str, Tensor] = {}
        if "expression" in self.heads:
            out["expression"] = self.heads["expression"](h)
        if "va" in self.heads:
            if self.config.va_head == "bins":
                logits = self.heads["va"](h).view(h.shape[0], 2, self.config.va_bins)
                probs = logits.float().softmax(dim=-1)
                out["va"] = (probs * self.va_centres).sum(dim=-1)
                out["va_logits"] = logits
            else:
                out["va"] = torch.tanh(self.heads["va"](h))
        if "au" in self.heads:
            out["au"] = self.heads["au"](h)
        if "joint" in self.heads:
            out["joint"] = self.heads["joint"](h)
        return out

    def calibrated(
        self, *, au_thresholds: Any = None, temperature: float | None = None
    ) -> MultitaskModel:
        """Set calibration values in the config (``None`` keeps a value); returns ``self``."""
        changes: dict[str, Any] = {}
        if au_thresholds is not None:
            changes["au_thresholds"] = tuple(float(t) for t in au_thresholds)
        if temperature is not None:
            changes["temperature"] = temperature
        self.config = dataclasses.replace(self.config, **changes)
        return self


def build_model(
    config: ModelConfig | Mapping[str, Any],
    *,
    weights: str | os.PathLike | None = None,
    seed: int | None = None,
) -> MultitaskModel:
    """Build a model; ``seed`` makes the initialisation deterministic (global RNG untouched).

    ``weights`` is a local file with a pretrained backbone state dict (``.safetensors`` or a
    torch ``.pt``/``.pth``); nothing is downloaded.
    """
    if not isinstance(config, ModelConfig):
        config = ModelConfig.from_dict(config)
    if seed is None:
        model = MultitaskModel(config)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            model = MultitaskModel(config)
    if weights is not None:
        load_backbone_weights(model.backbone, weights, name=config.backbone)
    return model


_PREFIXES = ("module.", "backbone.")
_IGNORED = ("fc.", "classifier.")


def load_backbone_weights(
    backbone: nn.Module, path: str | os.PathLike, *, name: str = "backbone"
) -> tuple[int, int]:
    """Load a pretrained state dict into ``backbone``; returns (matched, missing) key counts.

    Prefixes ``module.`` and ``backbone.`` are stripped and torchvision's classifier keys
    (``fc.*``, ``classifier.*``) ignored. Refuses a file where no key or a shape does not fit.
    """
    path = Path(path)
    state = _read_state_dict(path)
    own = backbone.state_dict()
    matched: dict[str, Tensor] = {}
    unused = 0
    for key, tensor in state.items():
        while key.startswith(_PREFIXES):
            key = key.split(".", 1)[1]
        if key.startswith(_IGNORED):
            continue
        if key not in own:
            unused += 1
            continue
        if tuple(own[key].shape) != tuple(tensor.shape):
            raise OmniferError(
                f"weights {path} do not fit backbone {name}: {key} has shape "
                f"{tuple(tensor.shape)}, expected {tuple(own[key].shape)} "
                f"({len(matched)} keys matched before it); use weights made for {name}"
            )
        matched[key] = tensor
    if not matched:
        raise OmniferError(
            f"weights {path} do not fit backbone {name}: 0 of {len(own)} keys matched "
            f"({len(state)} keys in the file); use a state dict made for {name}"
        )
    backbone.load_state_dict(matched, strict=False)
    missing = len(own) - len(matched)
    log.info(
        "loaded %d of %d %s tensors from %s (%d missing, %d unused)",
        len(matched), len(own), name, path, missing, unused,
    )
    return len(matched), missing


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise OmniferError(f"weights file {path} does not exist; give a local .safetensors or .pt file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file is a user error here
        text = " ".join(str(exc).split())[:200]
        raise OmniferError(
            f"weights file {path} is unreadable ({type(exc).__name__}: {text}); "
            "give a .safetensors file or a .pt/.pth state dict"
        ) from None
    while isinstance(state, Mapping):
        inner = state.get("state_dict", state.get("model"))
        if not isinstance(inner, Mapping):
            break
        state = inner
    if not isinstance(state, Mapping):
        raise OmniferError(
            f"weights file {path} holds a {type(state).__name__}, not a state dict; "
            "save model.state_dict() instead"
        )
    return {str(k): v for k, v in state.items() if isinstance(v, Tensor)}
