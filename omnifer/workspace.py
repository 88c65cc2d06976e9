"""Workspaces: run directories, "latest complete run" resolution and lineage.

A workspace is a folder (the current directory by default). Each stage run writes
``<workspace>/.omnifer/runs/<stage>/<run-id>/manifest.json`` plus its own files. Later stages
default their inputs to the latest complete run of the stage before them; an explicit path or
run id always wins.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omnifer import __version__
from omnifer.artifacts import (
    atomic_write_json,
    fingerprint,
    package_versions,
    path_fingerprint,
    read_json,
    to_jsonable,
)
from omnifer.errors import OmniferError

log = logging.getLogger(__name__)

STATUSES = ("running", "complete", "failed")
MANIFEST = "manifest.json"


class Run:
    """One stage run: a directory with a manifest."""

    def __init__(self, path: str | os.PathLike, manifest: dict[str, Any] | None = None):
        self.path = Path(path)
        self.manifest = manifest if manifest is not None else read_json(self.path / MANIFEST)
        self._t0 = time.perf_counter()

    # -- fields
    stage = property(lambda self: self.manifest["stage"])
    run_id = property(lambda self: self.manifest["run_id"])
    status = property(lambda self: self.manifest["status"])
    config = property(lambda self: self.manifest.get("config", {}))

    @property
    def ref(self) -> str:
        """``stage/run-id``, the form every command accepts."""
        return f"{self.stage}/{self.run_id}"

    @property
    def root(self) -> Path:
        """The workspace the run belongs to (``<root>/.omnifer/runs/<stage>/<id>``)."""
        parents = self.path.resolve().parents
        return parents[3] if len(parents) > 3 else parents[-1]

    @property
    def outputs(self) -> dict[str, Any]:
        """The outputs as absolute paths (the manifest stores them relative to the run)."""
        return {k: _absolute(self.path, v) for k, v in self.manifest.get("outputs", {}).items()}

    def output(self, name: str) -> Path:
        """Path of a named output."""
        if name not in self.outputs:
            raise OmniferError(
                f"run {self.ref} has no output {name!r} "
                f"(it has: {', '.join(self.outputs) or 'none'}); the run was made by another "
                "omnifer version or did not finish: run its stage again"
            )
        return Path(self.outputs[name])

    def __repr__(self) -> str:
        return f"Run({self.stage}/{self.run_id}, {self.status})"

    # -- updates
    def update(self, **fields: Any) -> None:
        """Merge ``fields`` into the manifest (dicts are merged one level deep) and save it.
        Paths in ``outputs`` are stored relative to the run directory when they lie in the
        workspace, so a workspace can be moved or copied."""
        if "outputs" in fields:
            fields["outputs"] = {k: relative_output(self.path, self.root, v)
                                 for k, v in (fields["outputs"] or {}).items()}
        for key, value in fields.items():
            value = to_jsonable(value)
            if isinstance(value, dict) and isinstance(self.manifest.get(key), dict):
                self.manifest[key].update(value)
            else:
                self.manifest[key] = value
        self.manifest["updated"] = _now()
        atomic_write_json(self.path / MANIFEST, self.manifest)

    def complete(self, *, outputs: dict[str, Any] | None = None,
                 counts: dict[str, Any] | None = None, **fields: Any) -> None:
        timings = {"seconds": round(time.perf_counter() - self._t0, 3)}
        self.update(outputs=outputs or {}, counts=counts or {}, timings=timings,
                    status="complete", **fields)

    def fail(self, error: BaseException | str) -> None:
        self.update(status="failed", error=str(error) or type(error).__name__)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None:
            self.fail(exc if not isinstance(exc, KeyboardInterrupt) else "interrupted")
        elif self.status == "running":
            self.complete()


class Workspace:
    """The folder where stages record their runs."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root if root is not None else os.getcwd()).resolve()

    @property
    def runs_dir(self) -> Path:
        return self.root / ".omnifer" / "runs"

    @property
    def cache_dir(self) -> Path:
        """Caches shared by the runs (decoded images, embeddings, experts)."""
        return self.root / ".omnifer" / "cache"

    def portable(self, path: str | os.PathLike) -> str:
        """``path`` as recorded in a config: relative to the workspace root when it lies in
        the workspace (so a moved workspace keeps working), absolute otherwise."""
        path = Path(path).resolve()
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def locate(self, recorded: str | os.PathLike) -> Path:
        """The path a config recorded with :meth:`portable` (absolute paths stay as they are)."""
        return self.root / recorded

    def __repr__(self) -> str:
        return f"Workspace({self.root})"

    # -- creating runs
    def start_run(self, stage: str, *, config: Any, inputs: dict[str, Any] | None = None,
                  seed: int | None = None, device: str | None = None,
                  resume: bool = True) -> Run:
        """Open a run of ``stage``.

        With ``resume``, the newest unfinished (running or failed) run of the stage with the
        same config fingerprint is reopened, so a long job continues where it stopped;
        otherwise a new run directory is created.
        """
        fp = fingerprint(config)
        if resume:
            for run in reversed(self.runs(stage)):
                if run.status != "complete" and run.manifest.get("config_fingerprint") == fp:
                    run.update(status="running", error=None,
                               resumed=run.manifest.get("resumed", 0) + 1)
                    log.info("resuming %s/%s", stage, run.run_id)
                    return run
        run_id = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
        path = self.runs_dir / stage / run_id
        path.mkdir(parents=True, exist_ok=False)
        manifest = {
            "stage": stage,
            "run_id": run_id,
            "omnifer_version": __version__,
            "created": _now(),
            "updated": _now(),
            "status": "running",
            "config": to_jsonable(config),
            "config_fingerprint": fp,
            "inputs": {k: self.describe_input(v) for k, v in (inputs or {}).items()},
            "packages": package_versions(),
            "python": platform.python_version(),
            "host": platform.node(),
            "device": device,
            "seed": seed,
            "counts": {},
            "timings": {},
            "outputs": {},
        }
        run = Run(path, manifest)
        atomic_write_json(path / MANIFEST, manifest)
        return run

    def describe_input(self, value: Run | str | os.PathLike) -> dict[str, Any]:
        """An input record: path, fingerprint and, for a run, its stage and id."""
        if isinstance(value, Run):
            return {"run": value.ref, "path": self.portable(value.path),
                    "fingerprint": value.manifest.get("config_fingerprint")}
        path = Path(value).resolve()
        record: dict[str, Any] = {"path": self.portable(path),
                                  "fingerprint": path_fingerprint(path)}
        owner = self._run_owning(path)
        if owner is not None:
            record["run"] = f"{owner.stage}/{owner.run_id}"
        return record

    # -- finding runs
    def runs(self, stage: str | None = None) -> list[Run]:
        """All runs (of one stage, or of every stage), oldest first."""
        stages = [stage] if stage else sorted(p.name for p in self.runs_dir.glob("*") if p.is_dir())
        out = []
        for st in stages:
            for d in (self.runs_dir / st).glob("*"):
                if (d / MANIFEST).is_file():
                    try:
                        out.append(Run(d))
                    except OmniferError as exc:
                        log.warning("ignoring run %s: %s", d, exc)
        return sorted(out, key=lambda r: (r.manifest.get("created", ""), r.run_id))

    def latest(self, stage: str, *, where: Callable[[Run], bool] | None = None) -> Run | None:
        """The newest complete run of ``stage`` (that satisfies ``where``), or None."""
        for run in reversed(self.runs(stage)):
            if run.status == "complete" and (where is None or where(run)):
                return run
        return None

    def resolve(self, ref: str | os.PathLike | None, stage: str, *, hint: str = "") -> Run:
        """Resolve a run reference: None or "latest" (newest complete run of ``stage``), a run
        id (or its unique prefix), ``stage/run-id``, or the path of a run directory."""
        if ref is None or str(ref) == "latest":
            run = self.latest(stage)
            if run is None:
                fix = hint or f"run `omnifer {stage}` first"
                raise OmniferError(f"no complete {stage} run in workspace {self.root}; {fix}")
            return run
        text = str(ref)
        path = Path(text)
        if (path / MANIFEST).is_file():
            return Run(path)
        run_stage, _, run_id = text.rpartition("/") if "/" in text else (stage, "", text)
        matches = [r for r in self.runs(run_stage) if r.run_id.startswith(run_id)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise OmniferError(
                f"no {run_stage} run {text!r} in workspace {self.root} and no run directory at "
                f"that path; `omnifer status` lists the runs"
            )
        raise OmniferError(
            f"run id {text!r} is ambiguous ({', '.join(r.run_id for r in matches)}); "
            f"give more of it"
        )

    def lineage(self) -> list[dict[str, Any]]:
        """Every run with the runs it consumed, oldest first."""
        rows = []
        for run in self.runs():
            parents = [rec["run"] for rec in run.manifest.get("inputs", {}).values()
                       if isinstance(rec, dict) and rec.get("run")]
            rows.append({
                "run": f"{run.stage}/{run.run_id}",
                "status": run.status,
                "created": run.manifest.get("created"),
                "inputs": parents,
                "counts": run.manifest.get("counts", {}),
                "seconds": run.manifest.get("timings", {}).get("seconds"),
            })
        return rows

    def _run_owning(self, path: Path) -> Run | None:
        try:
            rel = path.relative_to(self.runs_dir)
        except ValueError:
            return None
        if len(rel.parts) >= 2 and (self.runs_dir / rel.parts[0] / rel.parts[1] / MANIFEST).is_file():
            return Run(self.runs_dir / rel.parts[0] / rel.parts[1])
        return None


def relative_output(run_dir: Path, root: Path, value: Any) -> Any:
    """Absolute output paths inside the workspace as paths relative to the run directory
    (a relative output already is one); other paths stay absolute."""
    if isinstance(value, (list, tuple)):
        return [relative_output(run_dir, root, v) for v in value]
    if isinstance(value, (str, os.PathLike)) and os.path.isabs(value):
        path = Path(value).resolve()
        if path == root or root in path.parents:
            return os.path.relpath(path, run_dir.resolve())
        return str(path)
    return value


def _absolute(run_dir: Path, value: Any) -> Any:
    if isinstance(value, list):
        return [_absolute(run_dir, v) for v in value]
    if isinstance(value, str) and value and not os.path.isabs(value):
        return os.path.normpath(run_dir / value)
    return value


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")
