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
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omnifer import __version__, host
from omnifer.artifacts import (
    atomic_write_json,
    current_umask,
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
#: held (``flock``) by the process that has the run open, so that no second one opens it too
LOCK = ".lock"

try:
    import fcntl
except ImportError:  # no advisory locks on this system: runs are not locked
    fcntl = None  # type: ignore[assignment]


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, schedulers, ``docker stop``), raised like Ctrl-C so that the open
    run is marked failed and its command can be run again to resume."""


def terminate_like_interrupt() -> Any:
    """Make SIGTERM raise :class:`Terminated` in this process (forked workers still just
    die); returns the previous handler for ``signal.signal`` to restore (None off the main
    thread, where handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    owner = os.getpid()

    def handler(signum: int, frame: Any) -> None:
        if os.getpid() != owner:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated("terminated")

    return signal.signal(signal.SIGTERM, handler)


def check_manifest(file: Path, manifest: Any) -> None:
    """A manifest must be an object with the text fields every run has."""
    if not isinstance(manifest, dict):
        raise OmniferError(f"{file} is not a run manifest (a JSON {type(manifest).__name__}, "
                           "not an object); delete its run directory or restore the file")
    bad = [k for k in ("stage", "run_id", "status", "created")
           if not isinstance(manifest.get(k), str)]
    if bad:
        raise OmniferError(f"{file} lacks {', '.join(bad)} (or they are not text); delete its "
                           "run directory or restore the file")


class Run:
    """One stage run: a directory with a manifest."""

    def __init__(self, path: str | os.PathLike, manifest: dict[str, Any] | None = None):
        self.path = Path(path)
        self.manifest = manifest if manifest is not None else read_json(self.path / MANIFEST)
        check_manifest(self.path / MANIFEST, self.manifest)
        self._t0 = time.perf_counter()
        self._lock: int | None = None

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
    def stale(self) -> bool:
        """True for a ``running`` run whose process (on this host) no longer exists."""
        pid = self.manifest.get("pid")
        if self.status != "running" or not isinstance(pid, int) \
                or self.manifest.get("host") != platform.node():
            return False
        try:
            os.kill(pid, 0)  # PermissionError: alive, another user's
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        return False

    @property
    def state(self) -> str:
        """The status as people read it: ``stale`` for a running run whose process is gone."""
        return "stale" if self.stale else self.status

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
        self.update(outputs=outputs or {}, counts=counts or {}, timings=self._timings(),
                    status="complete", **fields)
        self.release()

    def fail(self, error: BaseException | str) -> None:
        try:
            self.update(status="failed", error=str(error) or type(error).__name__,
                        timings=self._timings())
        finally:
            self.release()

    def _timings(self) -> dict[str, Any]:
        """Seconds over every invocation of the run (a resumed run adds up its attempts)."""
        seconds = [*self.manifest.get("timings", {}).get("invocations", []),
                   round(time.perf_counter() - self._t0, 3)]
        return {"seconds": round(sum(seconds), 3), "invocations": seconds}

    def begin(self, **fields: Any) -> None:
        """Start this process's invocation of the run: its pid and host, the clock."""
        self._t0 = time.perf_counter()
        timings = self.manifest.get("timings") or {}
        if "invocations" not in timings and timings.get("seconds") is not None:
            timings = {"seconds": timings["seconds"], "invocations": [timings["seconds"]]}
        self.update(status="running", error=None, pid=os.getpid(), host=platform.node(),
                    timings=timings, **fields)

    def lock(self) -> bool:
        """Take the run's lock without waiting; False when another process holds it."""
        if fcntl is None:
            return True
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o666 & ~current_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock = fd
        return True

    def release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
        self._lock = None

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc is not None:
                try:
                    self.fail(str(exc) or "interrupted" if isinstance(exc, KeyboardInterrupt)
                              else exc)
                except OSError as err:  # a full or read-only disk: the first error tells more
                    log.warning("could not mark %s failed: %s", self.ref, err)
            elif self.status == "running":
                self.complete()
        finally:
            self.release()


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
        same config fingerprint and the same input contents is reopened, so a long job
        continues where it stopped; otherwise a new run directory is created. A run whose
        inputs changed since is not resumed, and neither is one another process has open (its
        lock is held): a warning names it and the new run.

        The returned run holds its lock until it leaves its ``with`` block.
        """
        fp = fingerprint(config)
        described = {k: self.describe_input(v) for k, v in (inputs or {}).items()}
        why = ""
        for run in reversed(self.runs(stage)) if resume else ():
            if run.status == "complete" or run.manifest.get("config_fingerprint") != fp:
                continue
            changed = _changed_inputs(run.manifest.get("inputs"), described)
            if changed:
                why = why or f"the inputs of {run.ref} changed since ({', '.join(changed)})"
                continue
            if not run.lock():
                why = why or (f"{run.ref} is open in another process (pid "
                              f"{run.manifest.get('pid')})")
                continue
            run.manifest = read_json(run.path / MANIFEST)  # as it is now that it is locked
            if run.status == "complete":
                run.release()
                continue
            run.begin(resumed=run.manifest.get("resumed", 0) + 1)
            log.info("resuming %s", run.ref)
            return run
        run_id = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
        path = self.runs_dir / stage / run_id
        path.mkdir(parents=True, exist_ok=False)
        if why:
            log.warning("not resuming: %s; starting a new run %s/%s (--fresh always does)",
                        why, stage, run_id)
        manifest = {
            "stage": stage,
            "run_id": run_id,
            "omnifer_version": __version__,
            "created": _now(),
            "updated": _now(),
            "status": "running",
            "config": to_jsonable(config),
            "config_fingerprint": fp,
            "inputs": described,
            "packages": package_versions(),
            "python": platform.python_version(),
            "host": platform.node(),
            "cpu": host.cpu(),
            "pid": os.getpid(),
            "device": device,
            "seed": seed,
            "counts": {},
            "timings": {},
            "outputs": {},
        }
        run = Run(path, manifest)
        run.lock()
        atomic_write_json(path / MANIFEST, manifest)
        return run

    def describe_input(self, value: Run | str | os.PathLike | dict) -> dict[str, Any]:
        """An input record: path, fingerprint and, for a run, its stage and id (a dict is
        taken as an input record already)."""
        if isinstance(value, dict):
            return value
        if isinstance(value, Run):
            return {"run": value.ref, "path": self.portable(value.path),
                    "fingerprint": value.manifest.get("config_fingerprint")}
        path = Path(value).resolve()
        record: dict[str, Any] = {"path": self.portable(path),
                                  "fingerprint": path_fingerprint(path)}
        owner = self.owner(path)
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
                        if str(d) not in _IGNORED:  # once per process, not per lookup
                            _IGNORED.add(str(d))
                            log.warning("ignoring run %s: %s", d, exc)
        return sorted(out, key=lambda r: (r.manifest["created"], r.run_id))

    def latest(self, stage: str, *, where: Callable[[Run], bool] | None = None) -> Run | None:
        """The newest complete run of ``stage`` (that satisfies ``where``), or None."""
        for run in reversed(self.runs(stage)):
            if run.status == "complete" and (where is None or where(run)):
                return run
        return None

    def resolve(self, ref: str | os.PathLike | None, stage: str, *, hint: str = "") -> Run:
        """Resolve a run reference: None, "latest" or "stage/latest" (the newest complete run),
        a run id (or its unique prefix), ``stage/run-id``, or the path of a run directory."""
        text = "latest" if ref is None else str(ref)
        path = Path(text)
        if (path / MANIFEST).is_file():
            return Run(path)
        run_stage, _, run_id = text.rpartition("/") if "/" in text else (stage, "", text)
        if run_id == "latest":
            run = self.latest(run_stage)
            if run is None:
                fix = hint if run_stage == stage and hint else f"run `omnifer {run_stage}` first"
                raise OmniferError(f"no complete {run_stage} run in workspace {self.root}; {fix}")
            return run
        if path.is_absolute() or text.startswith(".") or not run_stage:
            raise OmniferError(f"no run directory at {text} (no {MANIFEST} there); pass a run "
                               f"directory, a run id or {stage}/latest")
        matches = [r for r in self.runs(run_stage) if r.run_id.startswith(run_id)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise OmniferError(f"no {run_stage} run {text!r} in workspace {self.root} and no "
                               "run directory at that path; `omnifer status` lists the runs")
        raise OmniferError(f"run id {text!r} is ambiguous "
                           f"({', '.join(r.run_id for r in matches)}); give more of it")

    def lineage(self) -> list[dict[str, Any]]:
        """Every run with the runs it consumed, oldest first."""
        rows = []
        for run in self.runs():
            parents = [rec["run"] for rec in run.manifest.get("inputs", {}).values()
                       if isinstance(rec, dict) and rec.get("run")]
            rows.append({"run": run.ref, "status": run.state, "created": run.manifest["created"],
                         "inputs": parents, "counts": run.manifest.get("counts", {}),
                         "seconds": run.manifest.get("timings", {}).get("seconds")})
        return rows

    def owner(self, path: str | os.PathLike) -> Run | None:
        """The run whose directory holds ``path``, or None."""
        try:
            rel = Path(path).resolve().relative_to(self.runs_dir)
        except ValueError:
            return None
        if len(rel.parts) >= 2 and (self.runs_dir / rel.parts[0] / rel.parts[1] / MANIFEST).is_file():
            return Run(self.runs_dir / rel.parts[0] / rel.parts[1])
        return None


#: run directories already warned about as unreadable
_IGNORED: set[str] = set()


def _changed_inputs(recorded: Any, described: dict[str, Any]) -> list[str]:
    """Names of the inputs whose content fingerprint differs from the recorded one."""
    recorded = recorded if isinstance(recorded, dict) else {}
    fp = {k: [(d.get(k) or {}).get("fingerprint") for d in (recorded, described)]
          for k in set(recorded) | set(described)}
    return sorted(k for k, (old, new) in fp.items() if old != new)


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
