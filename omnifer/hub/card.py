"""The dataset card: ``README.md`` with the Hub's YAML metadata and a body that says how the
set was made, from the run records (:class:`CardFacts`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Task categories and tags every published set carries.
TASK_CATEGORIES = ["image-classification"]
TAGS = ["facial-expression-recognition", "affective-computing", "faces", "omnifer"]
STAGE_TAGS = {"synth": ["synthetic"], "mine": ["pseudo-labeled", "omni-supervised"],
              "distill": ["dataset-distillation", "synthetic"]}
KIND = {"synth": "labeled", "mine": "mined (pseudo-labeled)", "distill": "distilled"}
PRIVACY = (
    "This dataset holds images of faces, which are personal data in many jurisdictions (for "
    "example biometric data under the GDPR when used to identify people). Use it only for "
    "research on facial expressions, do not try to identify the people shown, and honour "
    "removal requests: if you find yourself in it and want to be removed, open a discussion on "
    "this repository. Expression labels are machine estimates, not statements about what a "
    "person felt.")


@dataclass
class CardFacts:
    """What the card states, gathered from the run records."""

    stage: str  #: synth, mine or distill
    run: str  #: stage/run-id
    version: str  #: omnifer version
    date: str  #: ISO date of publishing
    splits: dict[str, dict[str, int]]  #: split -> num_examples, num_bytes
    features: list[dict[str, Any]]  #: dataset_info features
    per_class: dict[str, dict[str, int]]  #: split -> class -> rows
    lineage: list[str] = field(default_factory=list)  #: runs this one came from
    sources: list[str] = field(default_factory=list)  #: names of the data it came from
    model_fingerprint: str | None = None
    thresholds: list[dict[str, Any]] = field(default_factory=list)
    estimate: dict[str, Any] = field(default_factory=dict)
    leak_guard: dict[str, int] = field(default_factory=dict)
    distillation: dict[str, Any] = field(default_factory=dict)
    references: str | None = None  #: the command that rebuilds the images
    embeddings: bool = False
    index: dict[str, Any] | None = None  #: the FAISS sidecar when the index is published


def size_category(n: int) -> str:
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
              (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")]
    return next((name for top, name in bounds if n < top), "100M<n<1B")


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95% by default) of a proportion."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def metadata(facts: CardFacts, *, pretty_name: str, license: str, gated: str | None) -> Any:
    """The card's YAML metadata as ``huggingface_hub.DatasetCardData``."""
    from huggingface_hub import DatasetCardData

    rows = sum(s["num_examples"] for s in facts.splits.values())
    configs = [{"config_name": "default", "default": True,
                "data_files": [{"split": s, "path": f"data/{s}-*"} for s in facts.splits]}]
    if facts.embeddings:
        configs.append({"config_name": "embeddings",
                        "data_files": [{"split": "train", "path": "embeddings/train-*"}]})
    total = sum(s["num_bytes"] for s in facts.splits.values())
    extra: dict[str, Any] = {
        "tags": TAGS + STAGE_TAGS.get(facts.stage, []),
        "configs": configs,
        "dataset_info": {"config_name": "default", "features": facts.features,
                         "splits": [{"name": s, **v} for s, v in facts.splits.items()],
                         "download_size": total, "dataset_size": total},
    }
    if gated:
        extra["extra_gated_prompt"] = (
            "This dataset holds face images. Access is granted for research on facial "
            "expressions only; you agree not to identify the people shown.")
        extra["extra_gated_fields"] = {"Name": "text", "Affiliation": "text",
                                       "I will not try to identify the people shown": "checkbox"}
    return DatasetCardData(
        pretty_name=pretty_name, license=license, task_categories=TASK_CATEGORIES,
        size_categories=[size_category(rows)],
        annotations_creators=["machine-generated"],
        source_datasets=(["original"] if facts.stage == "synth"
                         else [f"extended|{s}" for s in facts.sources] or ["original"]),
        **extra)


def body(facts: CardFacts, *, pretty_name: str, repo: str | None) -> str:
    """The card's Markdown body."""
    rows = sum(s["num_examples"] for s in facts.splits.values())
    name = repo or "ORG/NAME"
    lines = [f"# {pretty_name}", "",
             f"A {KIND.get(facts.stage, facts.stage)} facial-expression dataset of {rows} rows, "
             f"made with omnifer {facts.version} on {facts.date} from run `{facts.run}`"
             + (f" (lineage: {', '.join(f'`{r}`' for r in facts.lineage)})" if facts.lineage
                else "") + ".", "", "## How it was made", ""]
    lines += made(facts)
    lines += ["", "## Rows per class", "", "| class | " + " | ".join(facts.per_class) + " |",
              "|---|" + "---|" * len(facts.per_class)]
    classes = list(dict.fromkeys(c for split in facts.per_class.values() for c in split))
    for c in classes:
        lines.append(f"| {c} | " + " | ".join(str(facts.per_class[s].get(c, 0))
                                                for s in facts.per_class) + " |")
    lines += ["", "## Files and loading", "",
              "Parquet shards `data/{split}-{i:05d}-of-{n:05d}.parquet`"
              + (" without pixels (see below)" if facts.references else
                 " with the images embedded") + "; `expression` is a `ClassLabel` (-1: no "
              "label), missing valence/arousal/AU values are NaN, `weight` is the sample weight "
              "omnifer trains with.", "", "```python", "from datasets import load_dataset",
              f'ds = load_dataset("{name}")', "```", "",
              f"omnifer trains on it as it is: `omnifer train --with hf://datasets/{name}` (or "
              "`--with` the downloaded folder)."]
    if facts.references:
        lines += ["", "## Rebuilding the images", "",
                  "The pool's images may not be redistributed, so this dataset holds pool keys, "
                  "sample ids (content hashes), labels and scores, no pixels. Rebuild the images "
                  "from your own copy of the pool (rows whose image hash differs are dropped and "
                  "counted):", "", "```bash", facts.references, "```"]
    if facts.embeddings or facts.index:
        lines += ["", "## Embeddings and index", ""]
        if facts.embeddings:
            lines.append("Config `embeddings`: one float16 L2-normalised embedding per row of "
                         "`data/train-*`, in the same order, keyed by `sample_id`, with "
                         "`pool_row` = the face's row in the pool index.")
        if facts.index:
            lines.append(f"`index/index.faiss` ({facts.index.get('factory')}, "
                         f"{facts.index.get('metric')}, {facts.index.get('count')} vectors of "
                         f"dimension {facts.index.get('dim')}) with its sidecar `index/index.json`"
                         " and `index/ids.parquet`. Row-order invariant: vector i of the index is "
                         "row i of `index/ids.parquet` (pool key, face number, content id); a "
                         "published row's `pool_row` names its vector.")
    lines += ["", "## Privacy", "", PRIVACY, ""]
    return "\n".join(lines)


def made(facts: CardFacts) -> list[str]:
    """Bullets on how the set was made, from the run records."""
    out = []
    if facts.model_fingerprint:
        out.append(f"- Primitive model (embeddings): fingerprint `{facts.model_fingerprint}`.")
    for r in facts.thresholds:
        t = r.get("threshold")
        out.append(f"- {r['class']}: threshold "
                   + (f"{t:.3f}" if isinstance(t, (int, float)) and math.isfinite(t) else "none")
                   + f", {r.get('mined', 0)} mined")
    est = facts.estimate
    if est:
        if est.get("precision") is None:
            out.append(f"- Estimated precision: none ({est.get('kept', 0)} of "
                       f"{est.get('held_out', 0)} held-out labeled faces kept).")
        else:
            kept = int(est.get("kept", 0))
            if est.get("interval"):  # Clopper-Pearson, recorded by the mining run
                (lo, hi), what = est["interval"], f"{est['confidence']:.0%} Clopper-Pearson"
            else:  # runs recorded before the interval was
                (lo, hi), what = wilson(est["precision"] * kept, kept), "95% Wilson"
            out.append(f"- Estimated precision {est['precision']:.3f} ({what} interval "
                       f"{lo:.3f}-{hi:.3f}) on {kept} kept of {est.get('held_out', 0)} "
                       f"calibration labeled faces; coverage {est.get('coverage', 0):.3f}.")
    if facts.leak_guard:
        out.append(f"- Leak guard: {facts.leak_guard.get('near_duplicates', 0)} pool faces are "
                   f"near duplicates of evaluation images; {facts.leak_guard.get('excluded', 0)}"
                   " of them would have been mined and were left out.")
    d = facts.distillation
    if d:
        steps = f", {d['iterations']} iterations" if d.get("iterations") else ""
        out.append(f"- Distillation: method {d.get('method')}{steps}, from `{d.get('source')}`"
                   + (f"; primitive model agreement {d['agreement']:.3f}"
                      if d.get("agreement") is not None else
                      "; model agreement not measured (no model was given)") + ".")
    if facts.stage == "synth":
        out.append("- Rendered by omnifer's procedural face generator: no real person is shown.")
    return out or ["- See the run record above."]


def write_card(folder: Path, facts: CardFacts, *, pretty_name: str, license: str,
               gated: str | None, repo: str | None) -> Path:
    """Write ``folder/README.md``."""
    from huggingface_hub import DatasetCard

    data = metadata(facts, pretty_name=pretty_name, license=license, gated=gated)
    card = DatasetCard(f"---\n{data.to_yaml()}\n---\n\n"
                       + body(facts, pretty_name=pretty_name, repo=repo))
    path = folder / "README.md"
    card.save(path)
    return path
