"""``TrainConfig``: every knob of ``omnifer train``, filled alike by flags and config files."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from omnifer.config import StageConfig
from omnifer.device import parse_device
from omnifer.errors import OmniferError
from omnifer.labels import TASKS

OPTIMIZERS = ("adamw", "adam")
SCHEDULES = ("cosine", "constant")
BALANCE = ("expression", "va", "au")
VA_HEADS = ("bins", "regress")
VA_LOSSES = ("ccc", "mse", "ccc+mse")
KD_KINDS = ("output", "structural")
#: which sources give validation rows: every source, or only those of ``--data`` (the extra
#: ones, such as mined or distilled sets, then only train)
VAL_FROM = ("all", "data")
ANCHOR_RULES = ("random", "farthest")


@dataclass(frozen=True)
class TrainConfig(StageConfig):
    """How one ``omnifer train`` run trains (a teacher, a student, or an ensemble of either)."""

    section: ClassVar[str] = "train"
    noun: ClassVar[str] = "training"

    # model
    backbone: str = "resnet18"
    input_size: int = 112
    tasks: tuple[str, ...] | None = None  #: None: every task the data labels
    va_head: str = "bins"
    va_bins: int = 20
    joint: bool = True
    weights: str | None = None  #: local pretrained backbone checkpoint
    dropout: float = 0.1
    # optimisation
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    optimizer: str = "adamw"
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    clip_grad: float = 5.0
    amp: bool = True  #: mixed precision on GPU (ignored on CPU)
    augment: bool = True  #: flip, shift, brightness/contrast
    # data
    val_fraction: float = 0.1
    val_from: str = "all"  #: one of VAL_FROM
    patience: int = 5  #: epochs without validation improvement before stopping (0: never)
    balance: tuple[str, ...] = ("expression",)
    balance_max_ratio: float = 10.0
    #: share of the draws per epoch for named sources, e.g. {"distilled": 0.3}; the other
    #: sources keep their draws, so the epoch grows (a small source as if repeated)
    source_share: tuple[tuple[str, float], ...] = ()
    #: student: sources whose rows the teacher labels again on every draw, as a random crop
    #: (:mod:`omnifer.train.relabel`): a small distilled set seen many ways
    relabel: tuple[str, ...] = ()
    # losses
    expression_weight: float = 1.0
    va_weight: float = 1.0
    au_weight: float = 1.0
    joint_weight: float = 0.5
    va_loss: str = "ccc"  #: regress head only: ccc, mse or ccc+mse
    gt_weight: float = 0.6  #: student: ground truth vs
    kd_weight: float = 0.4  #: teacher soft labels
    temperature: float = 2.0  #: distillation temperature
    #: what a student distils: the teacher's outputs (soft labels), the structure of its
    #: embeddings (batch cosine similarities compared with a Sinkhorn divergence), or both
    kd: tuple[str, ...] = ("output",)
    structural_weight: float = 0.1  #: measured: 1.0 swamps the ground truth (benchmarks.md)
    anchors: int = 16  #: structural KD: similarity rows restricted to k anchors of the batch
    anchor_rule: str = "random"  #: random: k random samples; farthest: farthest-point sampling
    sinkhorn_epsilon: float = 0.05  #: entropic regularisation of the Sinkhorn divergence
    sinkhorn_iterations: int = 50
    # run
    ensemble: int = 1
    #: generation 0 learns from ground truth, each later one also from the mean soft labels
    #: of the previous generation's ensemble
    generations: int = 1
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        parse_device(self.device)
        for name in ("tasks", "balance", "kd", "relabel"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = tuple(v.strip() for v in value.split(",") if v.strip() and v != "none")
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        if self.tasks is not None:
            _check_names("task", self.tasks, TASKS)
            if not self.tasks:
                raise OmniferError("tasks is empty; name at least one of " + ", ".join(TASKS))
        _check_names("balance strategy", self.balance, BALANCE)
        _check_names("kd", self.kd, KD_KINDS)
        if not self.kd:
            raise OmniferError("kd is empty; name output, structural or both (output,structural)")
        _check_choice("anchor_rule", self.anchor_rule, ANCHOR_RULES)
        _check_choice("val_from", self.val_from, VAL_FROM)
        object.__setattr__(self, "source_share", _shares(self.source_share))
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("va_head", self.va_head, VA_HEADS)
        _check_choice("va_loss", self.va_loss, VA_LOSSES)
        for name, low in (("epochs", 1), ("batch_size", 2), ("ensemble", 1), ("input_size", 16),
                          ("va_bins", 2), ("generations", 1), ("anchors", 2),
                          ("sinkhorn_iterations", 1)):
            if int(getattr(self, name)) < low:
                raise OmniferError(f"{name} is {getattr(self, name)}; it must be at least {low}")
        if not 0.0 <= self.val_fraction < 0.9:
            raise OmniferError(f"val_fraction is {self.val_fraction}; use a value in [0, 0.9)")
        for name in ("lr", "temperature", "sinkhorn_epsilon"):
            if not float(getattr(self, name)) > 0:
                raise OmniferError(f"{name} is {getattr(self, name)}; it must be positive")
        for f in dataclasses.fields(self):
            if f.name.endswith("_weight") and float(getattr(self, f.name)) < 0:
                raise OmniferError(f"{f.name} is {getattr(self, f.name)}; weights must be >= 0")


def _shares(value: Any) -> tuple[tuple[str, float], ...]:
    """``"distilled=0.3,mined=0.2"``, a mapping or pairs -> sorted (source, share) pairs."""
    if isinstance(value, str):
        value = [part.split("=", 1) for part in value.split(",") if part.strip()]
    pairs = value.items() if isinstance(value, dict) else value
    try:
        shares = tuple(sorted((str(k).strip(), float(v)) for k, v in pairs))
    except (TypeError, ValueError):
        raise OmniferError(f"source_share {value!r} is not SOURCE=SHARE pairs; write e.g. "
                           "distilled=0.3") from None
    if any(not 0 < v < 1 for _, v in shares) or sum(v for _, v in shares) >= 1:
        raise OmniferError(f"source_share {value!r}: each share must lie in (0, 1) and their "
                           "sum below 1; e.g. distilled=0.3")
    return shares


def _check_choice(what: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise OmniferError(f"unknown {what} {value!r}; choose one of: {', '.join(valid)}")


def _check_names(what: str, values: tuple[str, ...], valid: tuple[str, ...]) -> None:
    for v in values:
        _check_choice(what, v, valid)


@dataclass(frozen=True)
class EvaluateConfig(StageConfig):
    """How ``omnifer evaluate`` runs a model (or ensemble) over labeled data."""

    section: ClassVar[str] = "evaluate"

    batch_size: int = 256
    device: str = "auto"
    on_bad_files: str | None = None  #: None: the data spec's own setting, else error
    mc_dropout: int = 0  #: Monte-Carlo dropout passes per member (0: off)
    mc_rate: float | None = None  #: their dropout rate (None: the model's own)

    def __post_init__(self) -> None:
        parse_device(self.device)
        if self.batch_size < 1:
            raise OmniferError(f"batch_size is {self.batch_size}; it must be at least 1")
        check_mc_dropout(self.mc_dropout, self.mc_rate)


def check_mc_dropout(passes: int, rate: float | None) -> None:
    """One-line errors for Monte-Carlo dropout options (evaluate, predict)."""
    if isinstance(passes, bool) or int(passes) < 0:
        raise OmniferError(f"mc_dropout is {passes}; use 0 (off) or a number of passes, e.g. "
                           "--mc-dropout 20")
    if rate is not None and not 0.0 < float(rate) < 1.0:
        raise OmniferError(f"mc_rate is {rate}; use a dropout rate in (0, 1), e.g. --mc-rate 0.2")


def check_processes(batch_size: int, processes: int) -> None:
    """One line when a global batch does not split evenly over data-parallel processes."""
    if batch_size % processes:
        raise OmniferError(
            f"batch size {batch_size} does not split evenly over {processes} processes; use a "
            f"multiple of {processes}, e.g. --batch-size "
            f"{max(processes, batch_size // processes * processes)}")
