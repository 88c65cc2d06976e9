"""``report``: one self-contained HTML page and a Markdown summary of a workspace's runs.

The models compared (``arms``) come from the caller, else from the latest demo run, else from
every complete evaluate run of a train run. Pictures come from the latest complete synth,
index, mine and distill runs (those of the demo run when there is one). Whatever is missing
is a "not available" line in the page, never an error.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from omnifer import __version__, host
from omnifer.errors import OmniferError, one_line
from omnifer.pipeline import resolve
from omnifer.pipeline.progress import Progress, bar
from omnifer.records import DistillRun, EvaluateRun, IndexRun, MineRun, ReportRun, SynthRun
from omnifer.workspace import Run, Workspace

#: what a picture or a run may fail with that the report shows as "not available"
EXPECTED = (OmniferError, OSError, ValueError, KeyError, ImportError, RuntimeError)
#: stage of the runs that give the pictures
PICTURE_STAGES = ("synth", "index", "mine", "distill")
#: side in pixels of a face in the mined-faces sheet
FACE_SIDE = 64

#: the pool's hidden-truth kinds the benchmark counts as distractors (blends are faces)
DISTRACTORS = ("nonface", "occluded")


def report(workspace: Any = None, config: Any = None, *, arms: list[dict[str, Any]] | None = None,
           out: Any = None, progress: Progress | None = None) -> ReportRun:
    """Write ``report.html`` and ``report.md`` in a new report run and copy them to ``out``
    (default ``<workspace>/report.html``, the ``.md`` beside it). ``arms``: the models to
    compare, in order, ``{"name", "role", "train": "train/<id>", "evaluate":
    "evaluate/<id>"}`` with role teacher, labeled, mined, distilled, both or None."""
    from omnifer.artifacts import atomic_write_text
    from omnifer.report import ReportConfig, render_html, render_markdown

    ws = resolve.workspace(workspace)
    config = config or ReportConfig()
    out = Path(out).resolve() if out is not None else ws.root / "report.html"
    if out.is_dir():
        out = out / "report.html"
    out_md = out.with_suffix(".md")
    demo = latest_demo(ws)
    notes: list[str] = []
    if arms is None:
        arms = list(demo.manifest.get("arms") or []) if demo is not None else []
        arms = arms or default_arms(ws, notes)
    rows, evaluations = arm_results(ws, arms, notes)
    picked = {stage: pick(ws, stage, demo) for stage in PICTURE_STAGES}
    lineage = ws.lineage()
    inputs = {f"evaluate_{i}": ev.run for i, ev in enumerate(evaluations)}
    inputs.update({stage: rec.run for stage, (rec, _) in picked.items() if rec is not None})
    run_config = {"report": config.to_dict(), "arms": arms, "out": ws.portable(out)}
    with ws.start_run("report", config=run_config, inputs=inputs, seed=config.seed,
                      device=config.device, resume=False) as run:
        header = [("workspace", str(ws.root)),
                  ("date", dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")),
                  ("omnifer", __version__)]
        if demo is not None:
            header.append(("demo run", f"{demo.ref} ({demo_state(demo)})"))
        if demo is None or "cpu" in demo.manifest:  # the machine the results came from
            header.append(("machine", host.describe(demo.manifest["cpu"] if demo else None)))
        sections: list[dict[str, Any]] = []
        shown: dict[str, int] = {}  # the embedding map's group sizes
        builders = [
            lambda: steps_section(demo),
            lambda: results_section(rows, evaluations, notes),
            lambda: labeled_section(picked["synth"]),
            lambda: mining_section(picked["mine"], run.path, config),
            lambda: distill_section(picked["distill"]),
            lambda: models_section(rows, evaluations),
            lambda: map_section(ws, picked, run.path, config, shown),
            lambda: lineage_section(lineage),
        ]
        with bar(progress, "report", "section") as update:
            for i, build in enumerate(builders):
                sections.append(build())
                update(i + 1, len(builders))
        title = "omnifer report"
        html = render_html(title, header, sections)
        markdown = render_markdown(
            title, header, [s["summary"] for s in sections if "summary" in s],
            [*(f"note: {n}" for n in notes), f"HTML report: {out}",
             f"run copy: {run.path / 'report.html'}"])
        files = {"html": run.path / "report.html", "markdown": run.path / "report.md"}
        for path, text in ((files["html"], html), (files["markdown"], markdown),
                           (out, html), (out_md, markdown)):
            atomic_write_text(path, text)
        pictures = {k: run.path / f"{k}.png" for k in ("mined_faces", "embedding_map")
                    if (run.path / f"{k}.png").is_file()}
        run.complete(outputs={**files, **pictures},
                     counts={"models": len(rows), "notes": len(notes),
                             "html_bytes": len(html.encode("utf-8")),
                             **{f"map_{k}": v for k, v in shown.items()}},
                     results=rows, copies={"html": ws.portable(out),
                                           "markdown": ws.portable(out_md)})
    return ReportRun.from_run(run)


# ---------------------------------------------------------------- runs

def latest_demo(ws: Workspace) -> Run | None:
    """The newest demo run, whatever its status (a demo writes its report while running)."""
    runs = ws.runs("demo")
    return runs[-1] if runs else None


def demo_state(demo: Run) -> str:
    """The demo run's state as the report shows it: a demo that is writing this report (open
    in this process) has done every step before it."""
    if demo.status == "running" and demo.manifest.get("pid") == os.getpid() \
            and demo.manifest.get("host") == platform.node():
        return "complete up to this report, its last step"
    return demo.state


def pick(ws: Workspace, stage: str, demo: Run | None) -> tuple[Any, str]:
    """(record, "") of the demo's run of ``stage`` or else the latest complete one; (None,
    why) when there is none."""
    steps = (demo.manifest.get("steps") or []) if demo is not None else []
    refs = [s.get("run") for s in steps if isinstance(s, dict)]
    ref = next((r for r in reversed(refs) if isinstance(r, str) and r.startswith(stage + "/")),
               None)
    try:
        return resolve.run(ws, ref, stage), ""
    except OmniferError as exc:
        if ref is None:
            return None, str(exc)
    try:
        return resolve.run(ws, None, stage), ""
    except OmniferError as exc:
        return None, str(exc)


def describe_train(ws: Workspace, run: Run) -> tuple[str, str | None]:
    """(name, role) of a train run: teacher or student, plus the stages of its extra data
    (role labeled, mined, distilled or both for a student by its extra data)."""
    config = run.config or {}
    extras = []
    for path in (config.get("data") or [])[1:]:
        owner = ws.owner(ws.locate(path))
        extras.append(owner.stage if owner is not None else Path(path).stem)
    name = " + ".join(["student" if config.get("teacher") else "teacher", *extras])
    if not config.get("teacher") and not extras:
        return name, "teacher"
    roles = {frozenset(): "labeled", frozenset({"mine"}): "mined",
             frozenset({"distill"}): "distilled", frozenset({"mine", "distill"}): "both"}
    return name, roles.get(frozenset(extras))


def default_arms(ws: Workspace, notes: list[str]) -> list[dict[str, Any]]:
    """Every complete evaluate run of a train run, named from that train run; the others
    are left out with a note."""
    arms: list[dict[str, Any]] = []
    for ev in ws.runs("evaluate"):
        model = (ev.config or {}).get("model")
        if ev.status != "complete" or not model:
            continue
        owner = ws.owner(ws.locate(model))
        if owner is None or owner.stage != "train":
            notes.append(f"{ev.ref} left out: its model {model} is not a train run of this "
                         "workspace (any more)")
            continue
        name, role = describe_train(ws, owner)
        if any(a["name"] == name for a in arms):
            name = f"{name} ({owner.run_id})"
        arms.append({"name": name, "role": role, "train": owner.ref, "evaluate": ev.ref})
    return arms


def arm_results(ws: Workspace, arms: list[dict[str, Any]],
                notes: list[str]) -> tuple[list[dict[str, Any]], list[EvaluateRun]]:
    """One result row per arm whose evaluate run exists (with its record); the others are
    skipped with a note."""
    from omnifer.report import metrics_of, share_of_mined_gain

    rows, evaluations = [], []
    for arm in arms:
        name = str(arm.get("name") or arm.get("evaluate") or "?")
        if not arm.get("evaluate"):
            notes.append(f"model {name!r} skipped: it names no evaluate run")
            continue
        try:
            ev = resolve.run(ws, arm["evaluate"], "evaluate")
        except OmniferError as exc:
            notes.append(f"model {name!r} skipped: {exc}")
            continue
        train_seconds, train_ref = None, arm.get("train")
        if train_ref:
            try:
                train_seconds = resolve.run(ws, train_ref, "train").train_seconds
            except OmniferError as exc:
                notes.append(f"model {name!r}: no training time ({exc})")
        rows.append({"name": name, "role": arm.get("role"), "train": train_ref,
                     "evaluate": ev.ref, **metrics_of(ev.results),
                     "train_seconds": train_seconds})
        evaluations.append(ev)
    for row, share in zip(rows, share_of_mined_gain(rows)):
        row["share_of_mined_gain"] = share
    return rows, evaluations


# ---------------------------------------------------------------- sections

def attempt(fn: Any, what: str) -> dict[str, Any]:
    """The block ``fn()`` makes, or a "not available" block saying why it failed."""
    try:
        return fn()
    except EXPECTED as exc:
        return {"missing": f"{what}: {one_line(exc)}"}


def picture(path: Any, caption: str, why: str) -> dict[str, Any]:
    """An image block, or a "not available" one when the file is absent."""
    if path is not None and Path(path).is_file():
        return {"image": Path(path), "caption": caption}
    return {"missing": f"{caption}: {why}"}


def steps_section(demo: Run | None) -> dict[str, Any]:
    title = "Demo steps"
    if demo is None:
        return {"title": title, "blocks": [{"missing": "no demo run in this workspace"}]}
    steps = demo.manifest.get("steps") or []
    rows = [[s.get("step", ""), s.get("run", ""),
             "" if s.get("seconds") is None else f"{s['seconds']:.1f}"]
            for s in steps if isinstance(s, dict)]
    table = {"columns": ["step", "run", "wall time (s)"], "rows": rows}
    return {"title": title, "blocks": [{"table": table}] if rows else
            [{"missing": f"{demo.ref} recorded no step yet"}],
            "summary": {"title": title, **table}}


def lineage_section(lineage: list[dict[str, Any]]) -> dict[str, Any]:
    rows = [[r["run"], r["status"], ", ".join(r["inputs"]),
             ", ".join(f"{k}={v}" for k, v in r["counts"].items() if not isinstance(v, dict)),
             "" if r["seconds"] is None else f"{r['seconds']:.1f}"] for r in lineage]
    table = {"columns": ["run", "status", "inputs", "counts", "seconds"], "rows": rows}
    return {"title": "Lineage", "blocks": [{"table": table}] if rows else
            [{"missing": "no runs in this workspace"}]}


def results_section(rows: list[dict[str, Any]], evaluations: list[EvaluateRun],
                    notes: list[str]) -> dict[str, Any]:
    from omnifer.report import COLUMNS, chance_notes, results_table

    title = "Results"
    blocks: list[dict[str, Any]] = [{"note": n} for n in notes]
    if not rows:
        why = "no complete evaluate run of a trained model; run omnifer evaluate"
        return {"title": title, "blocks": [*blocks, {"missing": why}],
                "summary": {"title": title, "missing": why}}
    footnotes = ["ECE after temperature scaling. Share of the mined gain = (macro-F1 - the "
                 "labeled-only model's) / (the mined model's - the labeled-only model's), for "
                 "models trained with mined or distilled data."]
    chance: dict[tuple[str, ...], list[str]] = {}
    for ev in evaluations:
        chance.setdefault(tuple(chance_notes(ev.results)), []).append(ev.ref)
    footnotes += [("Chance" if len(chance) == 1 else f"Chance on {', '.join(refs)}") + ": "
                  + "; ".join(levels) + "." for levels, refs in chance.items() if levels]
    cells = results_table(rows)
    table = {"columns": list(COLUMNS), "rows": cells}
    html_table = {"columns": [*COLUMNS, "runs"],
                  "rows": [[*c, f"{r['train'] or ''} {r['evaluate']}".strip()]
                           for c, r in zip(cells, rows)]}
    return {"title": title, "blocks": [*blocks, {"table": html_table, "footnotes": footnotes}],
            "summary": {"title": title, **table, "footnotes": footnotes}}


def labeled_section(synth: tuple[SynthRun | None, str]) -> dict[str, Any]:
    rec, why = synth
    path = rec.out / "contact_labeled.png" if rec is not None else None
    return {"title": "Labeled data", "blocks": [picture(
        path, "labeled faces by class (synth contact sheet)",
        why or f"{rec.out} has no contact_labeled.png")]}


def mining_section(mine: tuple[MineRun | None, str], folder: Path, config: Any) -> dict[str, Any]:
    rec, why = mine
    title = "Mining"
    if rec is None:
        return {"title": title, "blocks": [{"missing": why}]}
    sheet = attempt(lambda: {"image": mined_faces(rec, folder / "mined_faces.png",
                                                  config.faces_per_class),
                             "caption": f"mined faces per class ({rec.ref}): the "
                                        f"{config.faces_per_class} best and the "
                                        f"{config.faces_per_class} borderline, with their score"},
                    "mined faces")
    return {"title": title, "blocks": [
        {"note": f"{rec.ref}: " + "; ".join(rec.summary[:3])} if rec.summary else
        {"note": rec.ref}, sheet,
        picture(rec.histograms, f"score histograms ({rec.ref})", "the run wrote none"),
        picture(rec.precision_coverage, f"precision and coverage ({rec.ref})",
                "the run wrote none"),
        picture(rec.out_of_distribution, f"out-of-distribution scores and cuts ({rec.ref})",
                "the run wrote none")]}


def mined_faces(rec: MineRun, path: Path, per_class: int) -> Path:
    """The sheet of each class's best and borderline mined faces."""
    import pandas as pd

    from omnifer.data.images import decode_image
    from omnifer.labels import EXPRESSIONS
    from omnifer.report import mined_faces_sheet

    table = pd.read_parquet(rec.dataset, columns=["label", "score", "image"])
    if not len(table):
        raise ValueError(f"{rec.ref} mined no face")
    base = rec.dataset.parent

    def faces(part: Any) -> list[tuple[np.ndarray, float]]:
        out = []
        for ref, score in zip(part["image"], part["score"]):
            ref = ref if os.path.isabs(ref) or "::" in ref else os.path.normpath(base / ref)
            try:
                out.append((decode_image(ref, FACE_SIDE), float(score)))
            except OmniferError:
                continue
        return out

    order = sorted(table["label"].unique(),
                   key=lambda c: (EXPRESSIONS.index(c) if c in EXPRESSIONS else 99, c))
    rows = []
    for label in order:
        group = table[table["label"] == label].sort_values("score", ascending=False)
        best, rest = group.iloc[:per_class], group.iloc[per_class:]
        rows.append((str(label), faces(best), faces(rest.sort_values("score").iloc[:per_class])))
    return mined_faces_sheet(rows, path, cell=FACE_SIDE)


def distill_section(distill: tuple[DistillRun | None, str]) -> dict[str, Any]:
    rec, why = distill
    caption = f"distilled images ({rec.ref}, {rec.method})" if rec is not None else \
        "distilled images"
    return {"title": "Distillation", "blocks": [picture(
        rec.grid if rec is not None else None, caption, why or "the run wrote no grid")]}


def models_section(rows: list[dict[str, Any]],
                   evaluations: list[EvaluateRun]) -> dict[str, Any]:
    title = "Models"
    if not rows:
        return {"title": title, "blocks": [{"missing": "no evaluated model"}]}
    blocks = [{"images": [picture(ev.confusion, f"{row['name']}: confusion matrix ({ev.ref})",
                                  "the run wrote none"),
                          picture(ev.reliability, f"{row['name']}: reliability ({ev.ref})",
                                  "the run wrote none")]}
              for row, ev in zip(rows, evaluations)]
    return {"title": title, "blocks": blocks}


def map_section(ws: Workspace, picked: dict[str, tuple[Any, str]], folder: Path,
                config: Any, totals: dict[str, int]) -> dict[str, Any]:
    """The embedding map; ``totals`` receives the size of each group."""
    title = "Embedding map"
    index, why = picked["index"]
    if index is None:
        return {"title": title, "blocks": [{"missing": why}]}
    caption = (f"first two principal components of the embeddings by {index.ref}'s model: "
               "labeled faces, mined pool faces, rejected pool faces and distractors "
               "(non-faces and heavily occluded faces of the synthetic pool's hidden truth, "
               f"mined or not); at most {config.map_points} points per group")
    path = folder / "embedding_map.png"
    return {"title": title, "blocks": [attempt(lambda: {"image": embedding_map_png(
        ws, index, picked["synth"][0], picked["mine"][0], path, config, totals),
        "caption": caption}, "embedding map")]}


def embedding_map_png(ws: Workspace, index: IndexRun, synth: SynthRun | None,
                      mine: MineRun | None, path: Path, config: Any,
                      totals: dict[str, int]) -> Path:
    """The map of labeled, mined, rejected and distractor embeddings (their counts into
    ``totals``). Labeled faces: the mine run's labeled data, else the synth run's."""
    import pandas as pd

    from omnifer.pipeline.embeddings import labeled_embeddings
    from omnifer.pools.index import load_index_outputs
    from omnifer.report import embedding_map

    rng = np.random.default_rng(config.seed)
    pool, ids = load_index_outputs(index.embeddings, index.ids)
    keys = ids["key"].astype(str).to_numpy()
    mined = set() if mine is None else \
        set(pd.read_parquet(mine.dataset, columns=["key"])["key"].astype(str))
    distractor = np.zeros(len(keys), bool)
    if synth is not None and synth.pool_truth.is_file():
        truth = pd.read_parquet(synth.pool_truth, columns=["file", "kind"])
        distractor = np.isin(keys, truth.loc[truth["kind"].isin(DISTRACTORS), "file"].astype(str))
    is_mined = np.isin(keys, list(mined)) & ~distractor
    labeled = np.zeros((0, pool.shape[1]), np.float32)
    ref: Any = synth.labeled if synth is not None else None
    if mine is not None and mine.run.config.get("labeled"):
        ref = mine.run.config["labeled"]
        ref = ref if "://" in ref else ws.locate(ref)
    if ref is not None:
        data = resolve.read_data(ws, ref)
        data = data.subset(data.masks()["expression"])  # as mine embeds them: cached there
        labeled = labeled_embeddings(ws, data, index.model, config.device)
    groups = {}
    for name, rows in (("labeled", np.arange(len(labeled))),
                       ("mined", np.flatnonzero(is_mined)),
                       ("rejected", np.flatnonzero(~is_mined & ~distractor)),
                       ("distractors", np.flatnonzero(distractor))):
        totals[name] = len(rows)
        if len(rows) > config.map_points:
            rows = np.sort(rng.choice(rows, config.map_points, replace=False))
        groups[name] = np.asarray((labeled if name == "labeled" else pool)[rows], np.float32)
    return embedding_map(groups, path, max_points=config.map_points, seed=config.seed,
                         totals=totals)
