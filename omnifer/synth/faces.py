"""Label side of the synthetic benchmark: action units, expression prototypes, valence/arousal
and identities.

Everything here is pure numpy and takes an explicit ``numpy.random.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from omnifer.labels import EXPRESSIONS

#: Action units the renderer draws, in column order.
AUS: tuple[str, ...] = (
    "AU1", "AU2", "AU4", "AU5", "AU6", "AU7", "AU9", "AU10", "AU12", "AU15", "AU20", "AU23",
    "AU26",
)
AU_INDEX: dict[str, int] = {name: i for i, name in enumerate(AUS)}
N_AUS = len(AUS)
N_CLASSES = len(EXPRESSIONS)

#: FACS-style prototypes: AU -> relative weight of the class intensity.
PROTOTYPES: dict[str, dict[str, float]] = {
    "neutral": {},
    "anger": {"AU4": 1.0, "AU5": 0.6, "AU7": 0.8, "AU23": 0.9},
    "disgust": {"AU9": 1.0, "AU10": 0.8, "AU15": 0.6},
    "fear": {"AU1": 0.9, "AU2": 0.7, "AU4": 0.6, "AU5": 1.0, "AU20": 0.9, "AU26": 0.6},
    "happiness": {"AU6": 0.9, "AU12": 1.0},
    "sadness": {"AU1": 1.0, "AU4": 0.6, "AU15": 0.9},
    "surprise": {"AU1": 1.0, "AU2": 1.0, "AU5": 0.9, "AU26": 1.0},
}

#: Prototype matrix [class, AU].
PROTOTYPE_MATRIX = np.zeros((N_CLASSES, N_AUS), dtype=np.float64)
for _c, _name in enumerate(EXPRESSIONS):
    for _au, _w in PROTOTYPES[_name].items():
        PROTOTYPE_MATRIX[_c, AU_INDEX[_au]] = _w

#: Circumplex position (valence, arousal) of each class at full intensity.
CIRCUMPLEX: dict[str, tuple[float, float]] = {
    "neutral": (0.0, -0.1),
    "anger": (-0.65, 0.7),
    "disgust": (-0.7, 0.3),
    "fear": (-0.6, 0.75),
    "happiness": (0.8, 0.45),
    "sadness": (-0.7, -0.45),
    "surprise": (0.25, 0.85),
}
CIRCUMPLEX_MATRIX = np.array([CIRCUMPLEX[n] for n in EXPRESSIONS], dtype=np.float64)


@dataclass(frozen=True)
class ExpressionParams:
    """How expressions are sampled (a subset of :class:`~omnifer.synth.config.SynthConfig`)."""

    intensity_min: float = 0.35
    intensity_max: float = 1.0
    au_jitter: float = 0.15  # relative jitter of each prototype AU
    jitter_prob: float = 0.25  # probability that a non-prototype AU is active
    jitter_max: float = 0.3  # max intensity of a jitter activation
    va_noise: float = 0.08
    au_threshold: float = 0.3


def sample_expression_labels(
    rng: np.random.Generator,
    classes: np.ndarray,
    params: ExpressionParams,
    *,
    classes2: np.ndarray | None = None,
    blend: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Sample AU intensities and valence/arousal for the given class indices.

    With ``classes2`` and ``blend`` (weight of ``classes`` in [0.5, 1]), the AU vector and the
    circumplex position are blends of the two classes.
    Returns ``intensity`` [n], ``au`` [n, N_AUS] float in [0, 1], ``valence`` [n],
    ``arousal`` [n].
    """
    classes = np.asarray(classes, dtype=np.int64)
    n = len(classes)
    lo, hi = params.intensity_min, params.intensity_max
    intensity = lo + (hi - lo) * rng.random(n)
    proto = PROTOTYPE_MATRIX[classes]
    va = CIRCUMPLEX_MATRIX[classes]
    if classes2 is not None and blend is not None:
        w = np.asarray(blend, dtype=np.float64)[:, None]
        proto = w * proto + (1 - w) * PROTOTYPE_MATRIX[np.asarray(classes2, dtype=np.int64)]
        va = w * va + (1 - w) * CIRCUMPLEX_MATRIX[np.asarray(classes2, dtype=np.int64)]
    rel = 1.0 + params.au_jitter * (2 * rng.random((n, N_AUS)) - 1)
    au = proto * intensity[:, None] * rel
    # Jitter: small random activations of AUs that are not part of the prototype.
    active = rng.random((n, N_AUS)) < params.jitter_prob
    jit = params.jitter_max * rng.random((n, N_AUS)) * active
    au = np.where(proto > 0, au, jit)
    au = np.clip(au, 0.0, 1.0)
    va = va * intensity[:, None] + params.va_noise * rng.standard_normal((n, 2))
    va = np.clip(va, -1.0, 1.0)
    return {"intensity": intensity, "au": au, "valence": va[:, 0], "arousal": va[:, 1]}


def au_binary(au: np.ndarray, threshold: float) -> np.ndarray:
    """Binary AU labels: intensity at or above ``threshold``."""
    return (np.asarray(au) >= threshold).astype(np.int8)


# --------------------------------------------------------------------------------------------
# Identities
# --------------------------------------------------------------------------------------------

#: Identity parameter names, one column each in an identity table.
IDENTITY_FIELDS: tuple[str, ...] = (
    "face_w", "face_h", "face_cy", "skin_r", "skin_g", "skin_b",
    "hair_r", "hair_g", "hair_b", "hair_style", "hair_len",
    "eye_dx", "eye_y", "eye_w", "eye_h", "iris_r", "iris_g", "iris_b",
    "brow_th", "brow_gap", "brow_len", "brow_slant", "brow_arch",
    "nose_len", "nose_w", "mouth_y", "mouth_w", "lip_th", "mouth_curve",
    "lip_r", "lip_g", "lip_b", "glasses", "glasses_r", "glasses_g", "glasses_b",
    "beard", "ear", "cloth_r", "cloth_g", "cloth_b",
)
_FIELD = {name: i for i, name in enumerate(IDENTITY_FIELDS)}

_SKIN = np.array(
    [[250, 215, 190], [235, 190, 160], [210, 160, 120], [180, 125, 90], [140, 95, 65],
     [100, 68, 48], [75, 50, 38]], dtype=np.float64,
)
_HAIR = np.array(
    [[25, 20, 18], [60, 40, 25], [110, 75, 40], [200, 165, 100], [150, 70, 35],
     [160, 160, 160], [235, 230, 220]], dtype=np.float64,
)
_HAIR_P = np.array([0.35, 0.25, 0.15, 0.1, 0.05, 0.07, 0.03])
_HAIR_P_SHIFT = np.array([0.15, 0.1, 0.1, 0.25, 0.15, 0.15, 0.1])


def make_identities(
    n: int, rng: np.random.Generator, *, variation: float = 1.0, shifted: bool = False,
) -> np.ndarray:
    """An identity table [n, len(IDENTITY_FIELDS)] of float64 parameters.

    ``variation`` scales the spread of the geometric parameters (0 = everyone alike);
    ``shifted`` draws from a different population (skin, hair, accessories, face shape), used
    for the domain-shifted pool.
    """
    v = float(variation)
    t = np.zeros((n, len(IDENTITY_FIELDS)))

    def u(lo: float, hi: float) -> np.ndarray:
        mid = (lo + hi) / 2
        return mid + (hi - lo) / 2 * v * (2 * rng.random(n) - 1)

    t[:, _FIELD["face_w"]] = u(0.50, 0.66) + (0.03 if shifted else 0.0)
    t[:, _FIELD["face_h"]] = u(0.66, 0.80) - (0.03 if shifted else 0.0)
    t[:, _FIELD["face_cy"]] = u(0.50, 0.55)
    # Skin: interpolate a palette; the shifted population is darker on average.
    pos = rng.beta(2.0, 3.5, n) if not shifted else rng.beta(3.5, 2.0, n)
    pos = pos * (len(_SKIN) - 1)
    i0 = np.floor(pos).astype(int).clip(0, len(_SKIN) - 2)
    f = (pos - i0)[:, None]
    skin = _SKIN[i0] * (1 - f) + _SKIN[i0 + 1] * f
    skin = skin * (1 + 0.06 * (2 * rng.random((n, 3)) - 1))
    t[:, _FIELD["skin_r"]:_FIELD["skin_b"] + 1] = np.clip(skin, 0, 255)
    hair_i = rng.choice(len(_HAIR), size=n, p=_HAIR_P_SHIFT if shifted else _HAIR_P)
    hair = _HAIR[hair_i] * (1 + 0.15 * (2 * rng.random((n, 3)) - 1))
    t[:, _FIELD["hair_r"]:_FIELD["hair_b"] + 1] = np.clip(hair, 0, 255)
    # Hair style: 0 bald, 1 short, 2 fringe, 3 long, 4 side part.
    style_p = [0.08, 0.32, 0.2, 0.25, 0.15] if not shifted else [0.15, 0.15, 0.35, 0.15, 0.2]
    t[:, _FIELD["hair_style"]] = rng.choice(5, size=n, p=style_p)
    t[:, _FIELD["hair_len"]] = rng.random(n)
    t[:, _FIELD["eye_dx"]] = u(0.155, 0.215)
    t[:, _FIELD["eye_y"]] = u(-0.07, -0.02)
    t[:, _FIELD["eye_w"]] = u(0.045, 0.065)
    t[:, _FIELD["eye_h"]] = u(0.020, 0.032)
    iris = np.array([[70, 45, 25], [40, 30, 20], [70, 110, 150], [80, 120, 70], [110, 80, 50]])
    t[:, _FIELD["iris_r"]:_FIELD["iris_b"] + 1] = iris[rng.integers(0, len(iris), n)]
    t[:, _FIELD["brow_th"]] = u(0.010, 0.026)
    t[:, _FIELD["brow_gap"]] = u(0.045, 0.075)
    t[:, _FIELD["brow_len"]] = u(0.085, 0.12)
    t[:, _FIELD["brow_slant"]] = u(-0.012, 0.012)
    t[:, _FIELD["brow_arch"]] = u(0.0, 0.02)
    t[:, _FIELD["nose_len"]] = u(0.09, 0.14)
    t[:, _FIELD["nose_w"]] = u(0.035, 0.055)
    t[:, _FIELD["mouth_y"]] = u(0.17, 0.22)
    t[:, _FIELD["mouth_w"]] = u(0.075, 0.105)
    t[:, _FIELD["lip_th"]] = u(0.010, 0.022)
    t[:, _FIELD["mouth_curve"]] = u(-0.008, 0.008)
    lip = skin * np.array([0.85, 0.55, 0.55]) + np.array([25, 0, 5])
    t[:, _FIELD["lip_r"]:_FIELD["lip_b"] + 1] = np.clip(lip, 0, 255)
    glasses_p = 0.35 if shifted else 0.18
    t[:, _FIELD["glasses"]] = rng.random(n) < glasses_p
    gl = np.array([[20, 20, 20], [90, 50, 20], [150, 150, 160], [120, 20, 30]])
    t[:, _FIELD["glasses_r"]:_FIELD["glasses_b"] + 1] = gl[rng.integers(0, len(gl), n)]
    beard_p = 0.25 if shifted else 0.12
    t[:, _FIELD["beard"]] = (rng.random(n) < beard_p) * rng.integers(1, 3, n)  # 1 moustache, 2 beard
    t[:, _FIELD["ear"]] = u(0.04, 0.06)
    t[:, _FIELD["cloth_r"]:_FIELD["cloth_b"] + 1] = rng.integers(20, 236, (n, 3))
    return t


def identity_field(table_row: np.ndarray, name: str) -> float:
    return float(table_row[_FIELD[name]])


FIELD_INDEX = _FIELD
