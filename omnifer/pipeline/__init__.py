"""The stages as Python functions: ``omnifer.pipeline.<stage>(workspace, config, *, inputs...)``.

Each function runs one stage in a workspace (a folder, default the current directory),
resolves the inputs it is not given to the latest complete run of the stage before it, prints
nothing, and returns the stage's typed run record (``omnifer.records``)::

    from omnifer import pipeline
    synth = pipeline.synth("ws", out="ws/data")
    teacher = pipeline.train("ws", TrainConfig(backbone="convnet", input_size=64, epochs=10))
    pool = pipeline.index("ws", pool=synth.pool)
    mined = pipeline.mine("ws", MineConfig(threshold=0.9))
    issues = pipeline.audit("ws")          # label errors, duplicates, outliers (AuditConfig)
    everything = pipeline.demo("ws")       # the whole chain on the benchmark, with a report

Pass ``progress=tqdm_progress`` for progress bars. This is the only package that knows two
stages at once; the CLI parses flags, calls these functions and prints their records.
"""

from __future__ import annotations

from omnifer.pipeline.audit import audit
from omnifer.pipeline.demo import DemoConfig, demo
from omnifer.pipeline.distill import distill
from omnifer.pipeline.distill_evaluate import distill_evaluate
from omnifer.pipeline.index import index
from omnifer.pipeline.mine import mine
from omnifer.pipeline.predict import PredictResult, predict
from omnifer.pipeline.progress import no_progress, tqdm_progress
from omnifer.pipeline.publish import publish
from omnifer.pipeline.publish_rebuild import rebuild
from omnifer.pipeline.report import report
from omnifer.pipeline.synth import synth
from omnifer.synth.options import SynthOptions
from omnifer.pipeline.train import evaluate, train

__all__ = ["DemoConfig", "PredictResult", "SynthOptions", "audit", "demo", "distill",
           "distill_evaluate", "evaluate", "index", "mine", "no_progress", "predict", "publish",
           "rebuild", "report", "synth", "tqdm_progress", "train"]
