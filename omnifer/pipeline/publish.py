"""``publish``: a synth, mine or distill run as a Hugging Face Hub dataset (Hub-layout Parquet
with the images embedded, a dataset card from the run records), written to a folder and
uploaded unless asked not to. ``rebuild`` turns a references-only set back into one with
images, from a copy of its pool."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omnifer.errors import OmniferError
from omnifer.pipeline import resolve
from omnifer.pipeline.progress import Progress, bar
from omnifer.pipeline.publish_files import write_folder
from omnifer.records import RECORDS, IndexRun, PublishRun, RunRecord

PUBLISHABLE = ("synth", "mine", "distill")
#: Columns of the stored sets that the published table leaves out (``label`` repeats
#: ``expression``).
DROPPED = ("label",)


@dataclass
class Split:
    """One split to publish: its sample table, extra columns and image references."""

    data: Any  #: LabeledSet
    extra: Any = None  #: DataFrame of the set's own columns, or None
    refs: list[str] = field(default_factory=list)


def publish(workspace: Any = None, config: Any = None, *, run: Any, to_dir: Any = None,
            dry_run: bool = False, api: Any = None,
            progress: Progress | None = None) -> PublishRun:
    """Publish ``run`` (``synth/ID``, ``mine/ID``, ``distill/ID`` or a run folder): write the
    Hub-layout folder (``to_dir``, default the publish run's ``hub/`` folder) and, unless
    ``to_dir`` or ``dry_run`` is given, upload it to ``config.repo`` through ``api`` (default
    ``huggingface_hub.HfApi()``; the token comes from ``HF_TOKEN`` or the login cache)."""
    from omnifer.hub import PublishConfig
    from omnifer.hub.upload import make_api, upload

    ws = resolve.workspace(workspace)
    config = config or PublishConfig()
    uploading = to_dir is None and not dry_run
    if uploading and config.repo is None:
        raise OmniferError("no --repo given; name the Hub dataset with --repo ORG/NAME, or "
                           "write the folder only with --to-dir DIR")
    record = publishable(ws, run)
    index_run = check_options(ws, record, config)
    out = Path(to_dir) if to_dir is not None else None
    if out is not None and out.exists() and any(out.iterdir()):
        raise OmniferError(f"--to-dir {out} is not empty; give a new or empty folder")
    if uploading and api is None:
        api = make_api()  # no token: one line, nothing written
    splits = gather(ws, record, progress)
    run_config = {"publish": config.to_dict(), "run": record.ref,
                  "to_dir": str(out) if out is not None else None, "dry_run": dry_run}
    with ws.start_run("publish", config=run_config, inputs={"run": record.run},
                      resume=False) as prun:
        folder = out if out is not None else prun.path / "hub"
        folder.mkdir(parents=True, exist_ok=True)
        facts = write_folder(folder, record, splits, config=config, index_run=index_run,
                             pool=pool_name(ws, record), progress=progress)
        result: dict[str, Any] = {}
        if uploading:
            with bar(progress, f"uploading to {config.repo}", "file") as update:
                result = upload(folder, config.repo, api=api, private=config.private,
                                gated=config.gated, revision=config.revision,
                                commit_message=config.commit_message, progress=update)
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                       if p.is_file())
        prun.complete(outputs={"folder": folder},
                      counts={s: v["num_examples"] for s, v in facts.splits.items()},
                      source_run=record.ref, repo=config.repo if uploading else None,
                      commit=result.get("commit"), commit_url=result.get("commit_url"),
                      files=files, uploaded=len(result.get("uploaded", [])),
                      skipped=result.get("skipped", 0), references=config.as_references)
    return PublishRun.from_run(prun)


def publishable(ws: Any, ref: Any) -> RunRecord:
    """The typed record of a synth, mine or distill run named by ``ref``."""
    from omnifer.workspace import Run

    if isinstance(ref, RunRecord):
        found = ref.run
    elif Path(str(ref), "manifest.json").is_file():
        found = Run(Path(str(ref)))
    else:
        stage, _, _ = str(ref).partition("/")
        if "/" not in str(ref) or stage not in RECORDS:
            raise OmniferError(f"{ref!r} names no run; give a run as stage/run-id (e.g. "
                               "mine/20250101-120000-abcd; `omnifer status` lists them)")
        found = ws.resolve(str(ref), stage)
    if found.stage not in PUBLISHABLE:
        raise OmniferError(f"{found.ref} is a {found.stage} run, which holds no dataset; publish "
                           f"a {', '.join(PUBLISHABLE)} run")
    return resolve.run(ws, found, found.stage)


def check_options(ws: Any, record: RunRecord, config: Any) -> IndexRun | None:
    """The index run behind a mined set when the options need it; one line for options that
    do not fit the run."""
    wants = config.with_embeddings or config.with_index or config.as_references
    if not wants:
        return None
    if record.stage != "mine":
        raise OmniferError(f"--with-embeddings, --with-index and --as-references apply to mined "
                           f"sets (pool faces); {record.ref} is a {record.stage} run")
    index_run: IndexRun = resolve.run(ws, record.inputs["index"]["run"], "index")  # type: ignore
    if config.as_references and index_run.source == "folder":
        raise OmniferError(
            f"--as-references: the pool of {index_run.ref} is a folder of image files, whose "
            "keys are local file paths, not stable keys another copy of the pool shares; publish "
            "the images (drop --as-references) or index the pool in a keyed format (RecordIO, "
            "TSV, Parquet, saved datasets, WebDataset)")
    if config.as_references and index_run.detect is not None:
        raise OmniferError(f"--as-references: {index_run.ref} detected faces in its pool; "
                           "references rebuild whole images only, so publish the images")
    return index_run


def gather(ws: Any, record: RunRecord, progress: Progress | None) -> dict[str, Split]:
    """The splits of a run: a synth run's labeled set (train) and test set, or the set a mine
    or distill run wrote (train) with its own columns."""
    import pandas as pd

    from omnifer.data import LabeledSet
    from omnifer.data.table import columns_for

    if record.stage == "synth":
        out = {}
        with bar(progress, "reading data", "img") as update:
            for split, path in (("train", record.labeled), ("test", record.test)):
                data = resolve.read_data(ws, path, progress=update)
                out[split] = Split(data, None, data.table["image"].tolist())
        return out
    data = LabeledSet.load(record.dataset)
    raw = pd.read_parquet(record.dataset)
    own = [c for c in raw.columns if c not in columns_for(data.aus) and c not in DROPPED]
    return {"train": Split(data, raw[own].reset_index(drop=True) if own else None,
                           data.table["image"].tolist())}


def pool_name(ws: Any, record: RunRecord) -> str | None:
    """The name of a mined set's pool (its folder or file name)."""
    if record.stage != "mine":
        return None
    index_run: IndexRun = resolve.run(ws, record.inputs["index"]["run"], "index")  # type: ignore
    return index_run.pool.name
