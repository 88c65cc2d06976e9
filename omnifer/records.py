"""Typed run records: what each stage's run holds, read from and written to its manifest.

A record is a frozen dataclass per stage. :meth:`RunRecord.from_manifest` turns a manifest
into one (outputs resolved to absolute paths, the stage's config class rebuilt), so stages read
``record.dataset`` or ``record.config.threshold`` instead of untyped manifest keys;
:meth:`RunRecord.to_manifest` gives back the manifest fields it holds, output paths relative to
the run directory. A manifest that lacks a field this version needs is a one-line error naming
the run and the fix.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from omnifer.errors import OmniferError
from omnifer.workspace import Run, relative_output

R = TypeVar("R", bound="RunRecord")


def output(**kwargs: Any) -> Any:
    """A record field stored under the manifest's ``outputs`` (a path, or a list of paths)."""
    return field(metadata={"output": True}, **kwargs)


def _path(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(Path(v) for v in value)
    return Path(value) if isinstance(value, str) else value


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """Fields every run has; subclasses add their stage's outputs and results."""

    stage: ClassVar[str] = ""
    #: the stage's config class and the manifest ``config`` key it lives under ("" = top level)
    config_class: ClassVar[Any] = None
    config_key: ClassVar[str] = ""

    run_id: str
    path: Path
    status: str
    counts: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None
    config: Any = None
    inputs: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        """``stage/run-id``: what every command and pipeline function accepts."""
        return f"{self.stage}/{self.run_id}"

    @property
    def run(self) -> Run:
        return Run(self.path)

    @classmethod
    def from_run(cls: type[R], run: Run) -> R:
        return cls.from_manifest(run.path, run.manifest)

    @classmethod
    def from_manifest(cls: type[R], path: str | os.PathLike, manifest: dict[str, Any]) -> R:
        run = Run(path, manifest)
        if manifest.get("stage") != cls.stage:
            raise OmniferError(f"run {run.path} is a {manifest.get('stage')} run, not a "
                               f"{cls.stage} run; pass a {cls.stage} run")
        outputs = run.outputs
        values: dict[str, Any] = {
            "run_id": run.run_id, "path": run.path, "status": run.status,
            "counts": manifest.get("counts") or {},
            "seconds": (manifest.get("timings") or {}).get("seconds"),
            "inputs": manifest.get("inputs") or {},
            "config": cls.read_config(manifest.get("config") or {}),
        }
        base = {f.name for f in dataclasses.fields(RunRecord)}
        for f in dataclasses.fields(cls):
            if f.name in base:
                continue
            source = outputs if f.metadata.get("output") else manifest
            if f.name in source and source[f.name] is not None:
                values[f.name] = _path(source[f.name]) if f.metadata.get("output") \
                    else source[f.name]
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                if run.status != "complete":
                    raise OmniferError(
                        f"run {run.ref} is {run.status}, not complete; finish it (run its "
                        f"command again to resume) or pass a complete {cls.stage} run")
                raise OmniferError(
                    f"run {run.ref} has no {f.name!r} in its manifest ({run.path}); it was made "
                    f"by another omnifer version: run `omnifer {cls.stage}` again")
        return cls(**values)

    @classmethod
    def read_config(cls, config: dict[str, Any]) -> Any:
        if cls.config_class is None:
            return config
        data = config.get(cls.config_key, config) if cls.config_key else config
        return cls.config_class.from_dict(data)

    def to_manifest(self) -> dict[str, Any]:
        """The manifest fields of this record (outputs relative to the run directory)."""
        root = self.run.root
        out: dict[str, Any] = {"outputs": {}, "counts": self.counts}
        base = {f.name for f in dataclasses.fields(RunRecord)}
        for f in dataclasses.fields(self):
            if f.name in base:
                continue
            value = getattr(self, f.name)
            if f.metadata.get("output"):
                value = [str(v) for v in value] if isinstance(value, tuple) else value
                out["outputs"][f.name] = relative_output(self.path, root, value)
            else:
                out[f.name] = value
        return out


class _LazyConfig:
    """A config class imported on first use, so reading a record stays cheap."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def from_dict(self, data: dict[str, Any]) -> Any:
        import importlib

        return getattr(importlib.import_module(self.module), self.name).from_dict(data)


@dataclass(frozen=True, kw_only=True)
class SynthRun(RunRecord):
    stage: ClassVar[str] = "synth"
    out: Path = output()
    labeled: Path = output()  #: TOML spec of the labeled databases
    test: Path = output()  #: TOML spec of the test set
    pool: Path = output()
    pool_truth: Path = output()  #: the pool's hidden truth, for benchmarks
    #: the flipped labels of ``synth --label-noise`` (None without label noise)
    label_noise: Path | None = output(default=None)


@dataclass(frozen=True, kw_only=True)
class TrainRun(RunRecord):
    stage: ClassVar[str] = "train"
    config_class: ClassVar[Any] = _LazyConfig("omnifer.train.config", "TrainConfig")
    config_key: ClassVar[str] = "train"
    #: the best member's checkpoint folder by validation score (of the last generation)
    model: Path = output()
    members: tuple[Path, ...] = output()  #: of the last generation
    generations: tuple[Path, ...] = output(default=())  #: each generation's folder (G > 1)
    validation: list[dict[str, Any]] = field(default_factory=list)
    #: the members' mean on the validation rows; per generation with G > 1
    ensemble_validation: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float | None = None

    def member(self, k: int | None = None) -> Path:
        """One member's checkpoint folder; ``None`` is only allowed for a single model."""
        if k is None:
            if len(self.members) > 1:
                raise OmniferError(
                    f"{self.ref} is an ensemble of {len(self.members)} members and this stage "
                    f"embeds with one model; name a member: {self.ref}@0 .. "
                    f"{self.ref}@{len(self.members) - 1}")
            k = 0
        if not 0 <= k < len(self.members):
            raise OmniferError(f"{self.ref} has members 0 .. {len(self.members) - 1}, not {k}; "
                               f"use {self.ref}@0")
        return self.members[k]


@dataclass(frozen=True, kw_only=True)
class EvaluateRun(RunRecord):
    stage: ClassVar[str] = "evaluate"
    metrics: Path | None = output(default=None)
    reliability: Path | None = output(default=None)
    confusion: Path | None = output(default=None)
    results: dict[str, Any] = field(default_factory=dict)  #: metrics per task
    members: int = 1


@dataclass(frozen=True, kw_only=True)
class IndexRun(RunRecord):
    """``config`` is what decides the embeddings (the fields of ``pools.EmbedConfig``, paths
    as recorded by ``Workspace.portable``); the properties give them typed."""

    stage: ClassVar[str] = "index"
    embeddings: Path = output()
    ids: Path = output()
    index: Path = output()  #: folder of index.faiss and its sidecar index.json
    shards: tuple[Path, ...] = output(default=())
    embed_seconds: float | None = None
    sidecar: dict[str, Any] = field(default_factory=dict)  #: the FAISS index's description
    bad: list[dict[str, Any]] = field(default_factory=list)
    inherited_from: str | None = None

    @property
    def pool(self) -> Path:
        return self.run.root / self.config["pool"]

    @property
    def model(self) -> Path:
        """The checkpoint folder of the model that embedded the pool."""
        return self.run.root / self.config["model"]

    @property
    def source(self) -> str:
        return self.config["source"]

    @property
    def source_options(self) -> dict[str, Any]:
        return self.config.get("source_options") or {}

    @property
    def detect(self) -> str | None:
        return self.config.get("detect")


@dataclass(frozen=True, kw_only=True)
class MineRun(RunRecord):
    stage: ClassVar[str] = "mine"
    config_class: ClassVar[Any] = _LazyConfig("omnifer.mining.mine", "MineConfig")
    config_key: ClassVar[str] = "mine"
    dataset: Path = output()  #: mined.parquet, a sample table with provenance columns
    report: Path | None = output(default=None)
    histograms: Path | None = output(default=None)
    precision_coverage: Path | None = output(default=None)
    out_of_distribution: Path | None = output(default=None)
    thresholds: list[dict[str, Any]] = field(default_factory=list)
    estimate: dict[str, Any] = field(default_factory=dict)
    recall: dict[str, Any] | None = None
    summary: list[str] = field(default_factory=list)  #: the report's first lines


@dataclass(frozen=True, kw_only=True)
class AuditRun(RunRecord):
    """A label audit of labeled data: one row per face in ``table`` (docs/audit.md)."""

    stage: ClassVar[str] = "audit"
    config_class: ClassVar[Any] = _LazyConfig("omnifer.mining.audit", "AuditConfig")
    config_key: ClassVar[str] = "audit"
    table: Path = output()  #: audit.parquet
    csv: Path | None = output(default=None)  #: audit.csv, the same table
    sheet: Path | None = output(default=None)  #: suspects.png (absent when nothing is flagged)
    report: Path | None = output(default=None)
    summary: list[str] = field(default_factory=list)  #: the report's first lines
    outlier_cut: float | None = None


@dataclass(frozen=True, kw_only=True)
class DistillRun(RunRecord):
    stage: ClassVar[str] = "distill"
    config_class: ClassVar[Any] = _LazyConfig("omnifer.distill.config", "DistillConfig")
    config_key: ClassVar[str] = "distill"
    dataset: Path = output()  #: distilled.parquet (soft labels as ``soft_<class>`` columns)
    grid: Path | None = output(default=None)
    source: str  #: the distilled data as recorded by ``Workspace.portable``
    labeled: str | None = None  #: the labeled data added with ``with_labeled``
    method: str | None = None
    iterations: int | None = None
    width: int | None = None
    normalisation: dict[str, Any] | None = None
    model: str | None = None  #: the model that scored the images, as recorded
    agreement: float | None = None  #: share of the images that model gives their label
    #: per class filled with augmented views: {"images": n, "views_added": k}
    filled: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class PublishRun(RunRecord):
    """A published dataset: the Hub-layout folder and, when uploaded, where it went. The token
    is never recorded."""

    stage: ClassVar[str] = "publish"
    config_class: ClassVar[Any] = _LazyConfig("omnifer.hub.config", "PublishConfig")
    config_key: ClassVar[str] = "publish"
    folder: Path = output()  #: README.md + data/*.parquet (+ embeddings/, index/)
    source_run: str  #: the synth, mine or distill run published
    files: list[str] = field(default_factory=list)  #: the folder's files, relative
    repo: str | None = None  #: ORG/NAME when uploaded
    commit: str | None = None  #: the card commit's id
    commit_url: str | None = None
    uploaded: int = 0  #: files uploaded by this run (card excluded)
    skipped: int = 0  #: files the Hub already held with the same content
    references: bool = False  #: keys and labels without pixels


@dataclass(frozen=True, kw_only=True)
class ReportRun(RunRecord):
    """A workspace report: one self-contained HTML file and a Markdown summary."""

    stage: ClassVar[str] = "report"
    config_class: ClassVar[Any] = _LazyConfig("omnifer.report.config", "ReportConfig")
    config_key: ClassVar[str] = "report"
    html: Path = output()  #: report.html, images embedded
    markdown: Path = output()  #: report.md, the summary for terminals
    #: one row per evaluated model: name, train and evaluate runs, metrics, training seconds
    results: list[dict[str, Any]] = field(default_factory=list)
    #: where the report was copied for people to open, as ``Workspace.portable`` recorded it
    copies: dict[str, str] = field(default_factory=dict)

    def copy(self, name: str = "html") -> Path:
        """The copy of ``html`` or ``markdown`` (``WORKSPACE/report.html`` by default), or the
        run's own file when none was recorded."""
        recorded = self.copies.get(name)
        return self.run.root / recorded if recorded else getattr(self, name)


@dataclass(frozen=True, kw_only=True)
class DemoRun(RunRecord):
    """The whole chain on the built-in benchmark: the run of each step and the report."""

    stage: ClassVar[str] = "demo"
    config_class: ClassVar[Any] = _LazyConfig("omnifer.pipeline.demo", "DemoConfig")
    config_key: ClassVar[str] = "demo"
    #: the finished steps in order: [{"step": name, "run": "stage/id", "seconds": s}]
    steps: list[dict[str, Any]] = field(default_factory=list)
    #: the models compared: [{"name": ..., "train": "train/id", "evaluate": "evaluate/id"}]
    arms: list[dict[str, Any]] = field(default_factory=list)
    report: str | None = None  #: the report run, ``report/<id>``


RECORDS: dict[str, type[RunRecord]] = {
    r.stage: r for r in (SynthRun, TrainRun, EvaluateRun, IndexRun, MineRun, AuditRun,
                         DistillRun, PublishRun, ReportRun, DemoRun)}


def record_of(run: Run) -> RunRecord:
    """The typed record of any run (a plain :class:`RunRecord` for unknown stages)."""
    cls = RECORDS.get(run.stage)
    if cls is None:
        return RunRecord(run_id=run.run_id, path=run.path, status=run.status,
                         counts=run.manifest.get("counts") or {})
    return cls.from_run(run)
