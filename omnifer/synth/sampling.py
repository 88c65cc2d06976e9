"""What each synthetic sample is: identities, labels and rendered images from seeded streams.

Chunk ``k`` of split ``s`` draws from ``SeedSequence(seed, spawn_key=(s, k))`` (:func:`chunk_rng`);
identity tables come from their own streams (:func:`identity_table`). :func:`sample_faces`
renders labeled faces in memory, for calibration and tests.
"""

from __future__ import annotations

import numpy as np

from omnifer.errors import OmniferError
from omnifer.synth.config import SynthConfig, resolve_config
from omnifer.synth.faces import N_CLASSES, au_binary, make_identities, sample_expression_labels

#: Split name -> stream code used in seed spawn keys (never reorder).
SPLITS: dict[str, int] = {"expr": 1, "va": 2, "au": 3, "multi": 4, "test": 5, "pool": 6}
_ID_STREAMS = {"labeled": 101, "test": 102, "pool": 103}
#: Pool sample kinds; a row's ``kind`` is the index in this tuple.
POOL_KINDS: tuple[str, ...] = ("face", "nonface", "occluded", "blend")


def identity_table(config: SynthConfig, seed: int, group: str, *,
                   shifted: bool = False) -> np.ndarray:
    """The identity table of ``group`` (labeled, test or pool)."""
    n = {"labeled": config.n_identities_labeled, "test": config.n_identities_test,
         "pool": config.n_identities_pool}[group]
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_ID_STREAMS[group],)))
    return make_identities(n, rng, variation=config.identity_variation, shifted=shifted)


def id_offsets(config: SynthConfig) -> dict[str, int]:
    """First global identity number of each group (identities never repeat across groups)."""
    return {"labeled": 0, "test": config.n_identities_labeled,
            "pool": config.n_identities_labeled + config.n_identities_test}


def chunk_rng(seed: int, split: str, chunk: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(SPLITS[split], chunk)))


def sample_rows(
    rng: np.random.Generator, n: int, config: SynthConfig, split: str, start: int,
    identities: np.ndarray, *, shifted: bool,
) -> dict[str, np.ndarray]:
    """Labels of ``n`` samples of ``split`` (classes, kinds, AUs, valence/arousal, identity)."""
    if split == "expr":  # balanced class folders
        classes = (np.arange(start, start + n) % N_CLASSES).astype(np.int64)
    elif split == "pool":
        p = np.asarray(config.pool_class_probs, dtype=np.float64)
        classes = rng.choice(N_CLASSES, size=n, p=p / p.sum())
    else:
        classes = rng.integers(0, N_CLASSES, n)
    kind = np.zeros(n, dtype=np.int64)
    classes2 = np.full(n, -1, dtype=np.int64)
    blend = np.ones(n, dtype=np.float64)
    if split == "pool":
        u = rng.random(n)
        r1 = config.pool_nonface_rate
        r2 = r1 + config.pool_occluded_rate
        r3 = r2 + config.pool_blend_rate
        kind = np.select([u < r1, u < r2, u < r3], [1, 2, 3], 0)
        other = (classes + rng.integers(1, N_CLASSES, n)) % N_CLASSES
        w = 0.5 + 0.25 * rng.random(n)
        is_blend = kind == 3
        classes2 = np.where(is_blend, other, -1)
        blend = np.where(is_blend, w, 1.0)
    lab = sample_expression_labels(
        rng, classes, config.expression_params(),
        classes2=np.where(classes2 >= 0, classes2, classes), blend=blend,
    )
    ident = rng.integers(0, len(identities), n)
    quality = rng.integers(config.jpeg_quality_min, config.jpeg_quality_max + 1, n)
    return {"expression": classes, "kind": kind, "expression2": classes2, "blend": blend,
            "au": lab["au"], "valence": lab["valence"], "arousal": lab["arousal"],
            "identity": ident, "quality": quality}


def render_rows(
    rng: np.random.Generator, rows: dict[str, np.ndarray], identities: np.ndarray, size: int,
    config: SynthConfig, *, shifted: bool,
) -> list[bytes]:
    """JPEG bytes of each row of :func:`sample_rows` (non-faces for kind 1)."""
    from omnifer.synth.render import encode_jpeg, render_face, render_nonface

    params = config.render_params(shifted=shifted)
    out = []
    for i in range(len(rows["expression"])):
        kind = int(rows["kind"][i])
        if kind == 1:
            img = render_nonface(rng, size, params)
        else:
            img = render_face(rng, identities[rows["identity"][i]], rows["au"][i], size, params,
                              occlusion="heavy" if kind == 2 else "random")
        out.append(encode_jpeg(img, int(rows["quality"][i])))
    return out


def sample_faces(
    n: int, rng: np.random.Generator, *, config: SynthConfig | None = None, size: int | None = None,
    identities: np.ndarray | None = None, classes: np.ndarray | None = None, jpeg: bool = True,
    shifted: bool = False,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Render ``n`` labeled faces in memory.

    Returns ``images`` uint8 [n, size, size, 3] (JPEG round-tripped unless ``jpeg=False``) and
    labels: ``expression`` (canonical index), ``valence``, ``arousal``, ``au`` (intensities
    [n, len(AUS)]), ``au_binary``, ``identity`` (row of ``identities``). Without
    ``identities``, ``config.n_identities_labeled`` fresh identities are drawn from ``rng``.
    """
    from omnifer.synth.render import decode_jpeg, encode_jpeg, render_face

    config = config or resolve_config("demo")
    size = int(size or config.size)
    if identities is None:
        identities = make_identities(config.n_identities_labeled, rng,
                                     variation=config.identity_variation, shifted=shifted)
    if classes is None:
        classes = rng.integers(0, N_CLASSES, n)
    classes = np.asarray(classes, dtype=np.int64)
    if len(classes) != n:
        raise OmniferError(f"classes has {len(classes)} entries for n={n} faces; give one per face")
    lab = sample_expression_labels(rng, classes, config.expression_params())
    ident = rng.integers(0, len(identities), n)
    quality = rng.integers(config.jpeg_quality_min, config.jpeg_quality_max + 1, n)
    params = config.render_params(shifted=shifted)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        img = render_face(rng, identities[ident[i]], lab["au"][i], size, params)
        images[i] = decode_jpeg(encode_jpeg(img, int(quality[i]))) if jpeg else np.asarray(img)
    labels = {"expression": classes, "valence": lab["valence"], "arousal": lab["arousal"],
              "au": lab["au"], "au_binary": au_binary(lab["au"], config.au_threshold),
              "identity": ident}
    return images, labels
