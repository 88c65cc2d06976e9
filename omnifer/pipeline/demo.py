"""``demo``: the whole omni-supervised chain on the built-in benchmark, resumable step by step.

synth -> primitive model -> evaluate -> index -> mine -> distill -> four students (labeled
only; + mined; + distilled; + both) each evaluated on the test set -> a Hub-layout export of
the mined set -> the report. The demo is a run of its own: it records each finished step's run,
so calling it again after an interruption skips what is done and the interrupted stage resumes
where it stopped (training after its last complete epoch).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from omnifer.config import StageConfig
from omnifer.errors import OmniferError
from omnifer.pipeline import resolve
from omnifer.pipeline.progress import Progress
from omnifer.records import DemoRun, RunRecord, record_of
from omnifer.workspace import Run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig(StageConfig):
    """What ``omnifer demo`` runs; the defaults are ``make demo``'s."""

    section: ClassVar[str] = "demo"

    preset: str = "demo"  #: the synth preset
    #: a quick look: the primitive model trains ``fast_teacher_epochs``, each student
    #: ``fast_student_epochs``
    fast: bool = False
    fast_teacher_epochs: int = 10  #: on the demo preset, enough for the model to mine faces
    fast_student_epochs: int = 2
    backbone: str = "convnet"
    input_size: int = 64  #: the primitive model's
    student_size: int = 48  #: the students' input size (the teacher labels at its own)
    lr: float = 2e-3
    teacher_epochs: int = 30
    student_epochs: int = 3
    threshold: float = 0.9  #: mining floor on cosine evidence
    images_per_class: int = 10
    distilled_share: float = 0.2  #: share of each student epoch drawn from the distilled set
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("fast_teacher_epochs", "fast_student_epochs", "teacher_epochs",
                     "student_epochs", "images_per_class", "input_size", "student_size"):
            if getattr(self, name) < 1:
                raise OmniferError(f"demo {name} must be at least 1, not {getattr(self, name)}")
        cls = type(self)
        if self.fast and (self.teacher_epochs, self.student_epochs) != (cls.teacher_epochs,
                                                                         cls.student_epochs):
            raise OmniferError(f"demo fast sets the epochs ({self.fast_teacher_epochs} for the "
                               f"primitive model, {self.fast_student_epochs} for each student); "
                               "give teacher/student epochs without fast")
        if not 0 < self.distilled_share < 1:
            raise OmniferError(f"demo distilled_share must lie in (0, 1), not "
                               f"{self.distilled_share}; e.g. 0.2")

    def epochs(self, role: str) -> int:
        if role == "teacher":
            return self.fast_teacher_epochs if self.fast else self.teacher_epochs
        return self.fast_student_epochs if self.fast else self.student_epochs


#: the students: name, role (for the report's share of the mined gain), extra data sources
ARMS = (("student: labeled only", "labeled", ()),
        ("student: + mined", "mined", ("mine",)),
        ("student: + distilled", "distilled", ("distill",)),
        ("student: + mined + distilled", "both", ("mine", "distill")))
ROLES = {name: role for name, role, _ in ARMS}
SOURCES = {name: extra for name, _, extra in ARMS}

#: seconds each step took on a 2-core CPU with the demo preset (the epoch-bound ones per epoch):
#: the first estimate of the time left, scaled by how fast this machine turns out to be
EXPECTED = {"synth": 15, "teacher": 16, "evaluate": 5, "index": 15, "mine": 15,
            "distill": 60, "student": 17, "publish": 15, "report": 20}


@dataclass(frozen=True)
class Step:
    name: str
    kind: str  #: key of EXPECTED
    epochs: int = 0

    @property
    def expected(self) -> float:
        return EXPECTED[self.kind] * (self.epochs or 1)


def steps(config: DemoConfig) -> list[Step]:
    """The demo's steps in order."""
    out = [Step("synth", "synth"), Step("teacher", "teacher", config.epochs("teacher")),
           Step("evaluate teacher", "evaluate"), Step("index", "index"), Step("mine", "mine"),
           Step("distill", "distill")]
    for name in SOURCES:
        out.append(Step(name, "student", config.epochs("student")))
        out.append(Step(f"evaluate {name}", "evaluate"))
    return [*out, Step("publish", "publish"), Step("report", "report")]


def demo(workspace: Any = None, config: DemoConfig | None = None, *, resume: bool = True,
         progress: Progress | None = None,
         on_step: Callable[[dict[str, Any]], None] | None = None) -> DemoRun:
    """Run the demo in ``workspace`` (the benchmark goes to ``<workspace>/data``, the Hub
    export of the mined set to ``<workspace>/hub/mine``, the report to ``<workspace>/report.html``).

    With ``resume``, an interrupted demo with the same config goes on where it stopped, and a
    finished one whose runs all still exist is returned as it is; ``resume=False`` runs every
    step again. ``on_step(event)`` hears about each step: ``event`` has ``step``, ``index``,
    ``total``, ``status`` (``start``, ``done`` or ``skipped``), ``run``, ``seconds`` (the
    step's), ``elapsed`` (this call's) and ``remaining`` (estimated seconds left)."""
    from omnifer.artifacts import fingerprint

    ws = resolve.workspace(workspace)
    config = config or DemoConfig()
    plan = steps(config)
    run_config = {"demo": config.to_dict()}
    finished = ws.latest("demo", where=lambda r: r.manifest.get("config_fingerprint")
                         == fingerprint(run_config)) if resume else None
    if finished is not None and all(_recorded(ws, e) for e in finished.manifest["steps"]):
        return DemoRun.from_run(finished)
    with ws.start_run("demo", config=run_config, seed=config.seed, device=config.device,
                      resume=resume) as run:
        done = {s["step"]: s for s in run.manifest.get("steps") or []}
        arms: list[dict[str, Any]] = list(run.manifest.get("arms") or [])
        t0, spent, expected_done = time.perf_counter(), 0.0, 0.0
        records: dict[str, RunRecord] = {}

        def tell(i: int, status: str, ref: str | None = None, seconds: float | None = None):
            if on_step is None:
                return
            elapsed = time.perf_counter() - t0
            left = sum(s.expected for s in plan[i + (status != "start"):]
                       if s.name not in done)
            speed = spent / expected_done if expected_done > 0 else 1.0
            on_step({"step": plan[i].name, "index": i + 1, "total": len(plan), "status": status,
                     "run": ref, "seconds": seconds, "elapsed": elapsed,
                     "remaining": left * speed})

        for i, step in enumerate(plan):
            previous = _recorded(ws, done.get(step.name))
            if previous is not None:
                records[step.name] = previous
                tell(i, "skipped", previous.ref, done[step.name].get("seconds"))
                continue
            for later in plan[i:]:  # a step that runs again makes the later ones stale
                done.pop(later.name, None)
            tell(i, "start")
            started = time.perf_counter()
            rec = _run_step(ws, config, step, records, arms, progress)
            seconds = round(time.perf_counter() - started, 1)
            spent += seconds
            expected_done += step.expected
            records[step.name] = rec
            done[step.name] = {"step": step.name, "run": rec.ref, "seconds": seconds}
            run.update(steps=list(done.values()), arms=arms)
            tell(i, "done", rec.ref, seconds)
        run.complete(steps=list(done.values()), arms=arms, report=records["report"].ref,
                     counts={"steps": len(plan)})
    return DemoRun.from_run(run)


def _class_counts(mined: Any) -> dict[str, int]:
    """Faces the mine run kept per class (its ``mined_<class>`` counts)."""
    return {k.removeprefix("mined_"): int(v) for k, v in mined.counts.items()
            if k.startswith("mined_")}


def _recorded(ws: Any, entry: dict[str, Any] | None) -> RunRecord | None:
    """The complete run a finished step recorded, or None (not run, or deleted since)."""
    if not entry:
        return None
    stage, _, run_id = entry["run"].partition("/")
    path = ws.runs_dir / stage / run_id
    if not (path / "manifest.json").is_file():
        return None
    rec = record_of(Run(path))
    return rec if rec.status == "complete" else None


def _run_step(ws: Any, config: DemoConfig, step: Step, records: dict[str, RunRecord],
              arms: list[dict[str, Any]], progress: Progress | None) -> RunRecord:
    from omnifer import pipeline
    from omnifer.distill import DistillConfig
    from omnifer.hub import PublishConfig
    from omnifer.mining import MineConfig
    from omnifer.pools.config import IndexConfig
    from omnifer.train import TrainConfig
    from omnifer.train.config import EvaluateConfig

    name, dev = step.name, config.device
    synth = records.get("synth")
    teacher = records.get("teacher")
    if name == "synth":
        return pipeline.synth(ws, pipeline.SynthOptions(preset=config.preset, seed=config.seed),
                              out=ws.root / "data", progress=progress)
    recipe = TrainConfig(backbone=config.backbone, input_size=config.input_size, lr=config.lr,
                         seed=config.seed, device=dev)
    if name == "teacher":
        return pipeline.train(ws, recipe.replace(epochs=config.epochs("teacher")),
                              data=synth.labeled, progress=progress)
    if name.startswith("evaluate "):
        arm = name.removeprefix("evaluate ")
        rec = pipeline.evaluate(ws, EvaluateConfig(device=dev), model=records[arm],
                                data=synth.test, progress=progress)
        role = ROLES.get(arm, "teacher")
        entry = {"name": arm, "role": role, "train": records[arm].ref, "evaluate": rec.ref}
        arms[:] = [a for a in arms if a["name"] != arm] + [entry]
        return rec
    if name == "index":
        return pipeline.index(ws, IndexConfig(device=dev), pool=synth.pool, model=teacher,
                              progress=progress)
    if name == "mine":
        return pipeline.mine(ws, MineConfig(threshold=config.threshold, device=dev),
                             index=records["index"], labeled=synth.labeled, progress=progress)
    if name == "distill":
        mined = records["mine"]
        counts = _class_counts(mined)
        lacking = [c for c, n in counts.items() if n == 0]
        if lacking:  # those classes' images come from their labeled faces
            if len(lacking) == len(counts):
                log.warning("the mined set is empty (more --teacher-epochs make a primitive "
                            "model that mines faces); distilling the labeled faces")
            else:
                log.warning("the mined set has no face of %s; distilling it with the labeled "
                            "faces", ", ".join(lacking))
            data = resolve.read_data(ws, synth.labeled)
            labels = data.table["expression"].dropna().astype(int)
            for c, n in labels.value_counts().items():
                counts[data.expressions[c]] += int(n)
        per_class = min(config.images_per_class, max(counts.values()))
        if per_class < config.images_per_class:
            log.warning("distilling %d images per class: no class has %d faces", per_class,
                        config.images_per_class)
        return pipeline.distill(ws, DistillConfig(images_per_class=per_class,
                                                  with_labeled=bool(lacking), seed=config.seed,
                                                  device=dev),
                                source=mined, labeled=synth.labeled, model=teacher,
                                progress=progress)
    if name.startswith("student"):
        extra = SOURCES[name]
        sources = {"mine": records["mine"], "distill": records["distill"]}
        share = (("distilled", config.distilled_share),) if "distill" in extra else ()
        return pipeline.train(ws, recipe.replace(epochs=config.epochs("student"),
                                                 input_size=config.student_size,
                                                 source_share=share),
                              data=synth.labeled, extra=[sources[e] for e in extra],
                              student=True, teacher=teacher, progress=progress)
    if name == "publish":
        source = records["mine"]
        if not source.counts.get("mined"):
            log.warning("the mined set is empty; exporting the distilled set instead")
            source = records["distill"]
        out = ws.root / "hub" / source.stage
        if out.exists():  # a partial export of an interrupted demo: this step owns the folder
            shutil.rmtree(out)
        return pipeline.publish(ws, PublishConfig(), run=source, to_dir=out, progress=progress)
    if name == "report":
        return pipeline.report(ws, arms=arms, progress=progress)
    raise OmniferError(f"unknown demo step {name!r}")  # pragma: no cover - steps() names them

