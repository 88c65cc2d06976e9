"""Input resolution for every stage: the latest run of a stage, a run id or a path.

References a stage accepts:

- ``None``, ``"latest"`` or ``"stage/latest"`` (``mine/latest``): the newest complete run of
  the stage that produces the input;
- a run id (or its unique prefix) or ``stage/run-id``; a train run as a model can name one
  ensemble member with ``@k`` (``train/<id>@1``), its best member (``@best``), a generation
  (``@g1``) or a generation's member (``@g1.0``);
- a path: a data spec, folder or manifest, a run directory, or a checkpoint folder.

Explicit references to runs that did not complete are refused with one line, whether given as
a run id, a run directory or a folder inside one (a checkpoint of a killed train run).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from omnifer.errors import OmniferError
from omnifer.records import RECORDS, RunRecord, SynthRun, TrainRun
from omnifer.workspace import Run, Workspace

log = logging.getLogger(__name__)

HINTS = {
    "synth": "run `omnifer synth demo/data` first, or pass the data explicitly",
    "train": "train the primitive model first: omnifer train",
    "index": "index a pool first: omnifer index POOL",
    "mine": "mine the pool first: omnifer mine --threshold 0.9",
    "distill": "distil first: omnifer distill --images-per-class 10",
}


def workspace(ws: Workspace | str | os.PathLike | None) -> Workspace:
    """A :class:`Workspace` from itself, a folder, or None (the current directory)."""
    return ws if isinstance(ws, Workspace) else Workspace(ws)


def run(ws: Workspace, ref: Any, stage: str) -> RunRecord:
    """The typed record of a ``stage`` run named by ``ref`` (see the module doc)."""
    cls = RECORDS[stage]
    if isinstance(ref, RunRecord):
        if not isinstance(ref, cls):
            raise OmniferError(f"{ref.ref} is a {ref.stage} run; pass a {stage} run here")
        return ref
    if isinstance(ref, Run):
        found = ref
    else:
        found = ws.resolve(None if ref is None else str(ref), stage, hint=HINTS.get(stage, ""))
    check_complete(found, stage)
    return cls.from_run(found)


def check_complete(found: Run, stage: str) -> None:
    """Refuse a run that did not complete, naming its state and how to finish it."""
    if found.status == "complete":
        return
    state = found.state
    fix = ("wait for it to finish" if state == "running" else
           "finish it (run its command again to resume)")
    raise OmniferError(f"run {found.ref} is {state}; {fix} or pass a complete {stage} run")


def inside_complete_run(ws: Workspace, path: Path, stage: str) -> Path:
    """``path`` (a run directory or a folder inside one) once its run is known complete."""
    owner = Run(path) if (path / "manifest.json").is_file() else ws.owner(path)
    if owner is not None:
        check_complete(owner, stage)
    return path


def synth_output(ws: Workspace, ref: Any, output: str, flag: str = "--data") -> str:
    """``ref`` when given, else the ``output`` (labeled or test) of the latest synth run;
    ``flag`` is the option that gives ``ref``, for the error without either."""
    if ref is not None:
        return str(data_path(ws, ref) if isinstance(ref, RunRecord) else ref)
    found = ws.latest("synth")
    if found is None:
        raise OmniferError(
            f"no {flag} given and no synth run in workspace {ws.root}; pass {flag} SPEC (a TOML "
            "spec, folder or manifest) or run `omnifer synth demo/data` first")
    return str(getattr(SynthRun.from_run(found), output))


def recorded_data(ws: Workspace, path: Any, stage: str, key: str) -> str | None:
    """The data the ``stage`` run that wrote ``path`` recorded under ``key`` (the first, for
    a list): the data a model was trained on, the labeled set a mined set was mined with.
    None when ``path`` is no such run's output or the data is gone."""
    run = ws.owner(path) if path is not None else None
    if run is None or run.stage != stage:
        return None
    data = run.config.get(key)
    data = data[0] if isinstance(data, list) and data else data
    path = ws.locate(data) if data else None
    return str(path) if path is not None and path.exists() else None


def latest_test(ws: Workspace) -> list[str]:
    """The latest synth run's test set, or none when no synth run is known."""
    run = ws.latest("synth")
    return [str(run.outputs["test"])] if run is not None and "test" in run.outputs else []


def default_exclude(ws: Workspace) -> list[str]:
    """The latest synth run's test set; none (with a warning) when no synth run is known."""
    found = latest_test(ws)
    if not found:
        log.warning("leak guard off: no evaluation set known; pass --exclude TEST_DATA so that "
                    "near duplicates of test images are never mined")
    return found


def data_path(ws: Workspace, ref: Any) -> Path:
    """A data path as given, or the dataset a run (``mine/ID``, ``distill/ID``) wrote."""
    if isinstance(ref, RunRecord):
        if not hasattr(ref, "dataset"):
            raise OmniferError(f"run {ref.ref} has no dataset; pass a mine or distill run or a "
                               "data path")
        return ref.dataset
    if isinstance(ref, str) and ref.startswith("hf://"):  # a Hub dataset repo, cached locally
        from omnifer.hub.read import snapshot

        return snapshot(ref)
    path = Path(ref)
    if (path / "manifest.json").is_file():  # a run directory: the dataset it wrote
        found = Run(path)
        if found.stage not in ("mine", "distill"):
            raise OmniferError(f"run {found.ref} has no dataset; pass a mine or distill run or "
                               "a data path")
        return run(ws, found, found.stage).dataset  # type: ignore[attr-defined]
    if path.exists():
        return inside_complete_run(ws, path, "mine or distill")
    stage = str(ref).split("/", 1)[0] if "/" in str(ref) else "mine"
    if stage not in ("mine", "distill"):
        raise OmniferError(f"{ref} is neither a path nor a mine or distill run; pass a data "
                           "path, mine/<id> or distill/<id>")
    return run(ws, ref, stage).dataset


def read_data(ws: Workspace, ref: Any, *, on_bad_files: str | None = None,
              progress: Any = None) -> Any:
    """A labeled set from a path (any reader, or a saved sample table) or a run's dataset."""
    from omnifer.data import LabeledSet, read_labeled

    path = data_path(ws, ref)
    if path.suffix == ".parquet":
        try:
            return LabeledSet.load(path)
        except OmniferError:
            pass  # a plain manifest
    return read_labeled(path, on_bad_files=on_bad_files, progress=progress)


def rows_input(data: Any) -> dict[str, Any]:
    """An input record of a labeled set's content (image content ids and labels, not paths),
    so that a resume notices an edited file that a data spec only points to."""
    import hashlib

    import pandas as pd

    hashes = pd.util.hash_pandas_object(data.table.drop(columns="image"), index=False)
    return {"rows": len(data), "fingerprint": hashlib.sha256(hashes.to_numpy().tobytes())
            .hexdigest()[:16]}


def train_run(ws: Workspace, ref: Any) -> Path:
    """A whole train run's folder (every member of its last generation), a part of one named
    with ``@`` (see :func:`model_part`) or a checkpoint folder."""
    if ref is not None and not isinstance(ref, RunRecord) and Path(ref).exists():
        return inside_complete_run(ws, Path(ref).resolve(), "train")
    ref, part = _split_part(ref)
    record: TrainRun = run(ws, ref, "train")  # type: ignore[assignment]
    return record.path if part is None else model_part(record, part)


def model_dir(ws: Workspace, ref: Any) -> Path:
    """ONE model's checkpoint folder: a checkpoint folder, a single-model train run, or one
    model of a run named with ``@``; an ensemble without a member is an error."""
    if isinstance(ref, (str, os.PathLike)) and Path(ref).exists():
        path = Path(ref).resolve()
        if (path / "model.json").is_file():
            return inside_complete_run(ws, path, "train")
        if (path / "manifest.json").is_file():
            return model_dir(ws, Run(path))
        raise OmniferError(f"no model at {path}: expected a checkpoint folder (model.json) or a "
                           "train run; pass a train run or checkpoint folder")
    ref, part = _split_part(ref)
    record: TrainRun = run(ws, ref, "train")  # type: ignore[assignment]
    if part is None:
        return record.member(None).resolve()
    path = model_part(record, part)
    if not (path / "model.json").is_file():
        raise OmniferError(f"{record.ref}@{part} is an ensemble and this stage uses one model; "
                           f"name one of its members: {record.ref}@{part}.0")
    return path.resolve()


def model_part(record: TrainRun, part: str) -> Path:
    """``k``: member k (of the last generation); ``best``: the member with the best validation
    score; ``gN``: generation N's ensemble folder; ``gN.k``: its member k."""
    if part == "best":
        return record.model
    if part.isdigit():
        return record.member(int(part))
    match = re.fullmatch(r"g(\d+)(?:\.(\d+))?", part)
    if match is None:
        raise OmniferError(f"{record.ref}@{part}: name a member (@0), the best member (@best), a "
                           "generation (@g1) or one of its members (@g1.0)")
    g = int(match[1])
    if not 0 <= g < len(record.generations):
        have = f"generations 0 .. {len(record.generations) - 1}" if record.generations else \
            "no generations (it was trained with --generations 1)"
        raise OmniferError(f"{record.ref} has {have}, not {g}; use @0 .. for its members")
    folder = record.generations[g]
    if match[2] is None:
        return folder
    member = folder / "members" / match[2] / "model"
    if not (member / "model.json").is_file():
        raise OmniferError(f"{record.ref} generation {g} has no member {match[2]}; members are "
                           f"{record.ref}@g{g}.0 .. @g{g}.{len(record.members) - 1}")
    return member


def _split_part(ref: Any) -> tuple[Any, str | None]:
    if isinstance(ref, str) and "@" in ref:
        ref, _, part = ref.rpartition("@")
        return ref, part
    return ref, None
