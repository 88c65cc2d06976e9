"""Procedural facial-expression benchmark: labeled databases with partial labels, an unlabeled
pool with hidden ground truth and distractors, and a fully labeled test set.

``generate(out_dir, preset=..., seed=...)`` writes it (layout in docs/data-format.md);
``sample_faces(n, rng, ...)`` renders labeled faces in memory. numpy and Pillow only at import
time (``datasets``/``pyarrow`` load inside the writer).
"""

from omnifer.synth.config import PRESETS, SynthConfig, resolve_config
from omnifer.synth.faces import AUS, CIRCUMPLEX, PROTOTYPES, make_identities
from omnifer.synth.generate import SynthResult, generate
from omnifer.synth.sampling import POOL_KINDS, sample_faces

__all__ = [
    "AUS", "CIRCUMPLEX", "POOL_KINDS", "PRESETS", "PROTOTYPES", "SynthConfig", "SynthResult",
    "generate", "make_identities", "resolve_config", "sample_faces",
]
