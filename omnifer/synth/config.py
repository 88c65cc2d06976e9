"""Generator configuration: one frozen dataclass, filled from a preset plus overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

from omnifer.errors import OmniferError
from omnifer.synth.faces import ExpressionParams
from omnifer.synth.render import RenderParams


@dataclass(frozen=True)
class SynthConfig:
    """Everything that decides the generated benchmark (together with the seed)."""

    size: int = 112
    # Labeled databases (each carries only some tasks).
    n_expr: int = 2000
    n_va: int = 2000
    n_au: int = 2000
    n_multi: int = 2000
    multi_full_fraction: float = 0.3  # rows of `multi` with all three tasks
    n_test: int = 2000
    n_pool: int = 15000
    # Identities: labeled, test and pool draw from disjoint sets.
    n_identities_labeled: int = 300
    n_identities_test: int = 100
    n_identities_pool: int = 1500
    identity_variation: float = 1.0
    # Pool composition (the rest are plain faces).
    pool_nonface_rate: float = 0.08
    pool_occluded_rate: float = 0.05
    pool_blend_rate: float = 0.10
    #: Class distribution of pool faces (canonical order); labeled sets and test are balanced.
    pool_class_probs: tuple[float, ...] = (0.24, 0.09, 0.07, 0.07, 0.28, 0.13, 0.12)
    # Expression sampling.
    intensity_min: float = 0.35
    intensity_max: float = 1.0
    au_jitter: float = 0.15
    jitter_prob: float = 0.25
    jitter_max: float = 0.3
    va_noise: float = 0.08
    au_threshold: float = 0.3
    # Nuisance factors.
    roll_deg: float = 12.0
    yaw: float = 0.6
    scale_jitter: float = 0.12
    shift: float = 0.07
    light_strength: float = 0.45
    noise_max: float = 12.0
    blur_max: float = 1.0
    occlusion_prob: float = 0.1
    background_clutter: float = 0.5
    jpeg_quality_min: int = 60
    jpeg_quality_max: int = 95
    # Domain shift of the pool (used when generate(..., domain_shift=True)).
    domain_shift: bool = False
    shift_light_tint: float = 0.5
    shift_light_strength: float = 0.7
    # Files per pool subfolder and samples per random-stream chunk (both change the output).
    pool_folder_size: int = 5000
    chunk_size: int = 250

    def expression_params(self) -> ExpressionParams:
        return ExpressionParams(
            intensity_min=self.intensity_min, intensity_max=self.intensity_max,
            au_jitter=self.au_jitter, jitter_prob=self.jitter_prob, jitter_max=self.jitter_max,
            va_noise=self.va_noise, au_threshold=self.au_threshold,
        )

    def render_params(self, *, shifted: bool = False) -> RenderParams:
        return RenderParams(
            roll_deg=self.roll_deg, yaw=self.yaw, scale_jitter=self.scale_jitter,
            shift=self.shift,
            light_strength=self.shift_light_strength if shifted else self.light_strength,
            light_tint=self.shift_light_tint if shifted else 0.0,
            noise_max=self.noise_max, blur_max=self.blur_max,
            occlusion_prob=self.occlusion_prob, background_clutter=self.background_clutter,
        )

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["pool_class_probs"] = list(self.pool_class_probs)
        return out

    def validate(self) -> "SynthConfig":
        """Raise :class:`OmniferError` on values that cannot produce a benchmark."""
        counts = ("n_expr", "n_va", "n_au", "n_multi", "n_test", "n_pool")
        for name in counts:
            if getattr(self, name) < 0:
                raise OmniferError(f"synth config {name}={getattr(self, name)} is negative; use 0 or more")
        for name in ("n_identities_labeled", "n_identities_test", "n_identities_pool",
                     "pool_folder_size", "chunk_size"):
            if getattr(self, name) < 1:
                raise OmniferError(f"synth config {name}={getattr(self, name)} must be at least 1")
        if not 16 <= self.size <= 1024:
            raise OmniferError(f"synth image size {self.size} is out of range; use 16..1024 (default 112)")
        rates = self.pool_nonface_rate + self.pool_occluded_rate + self.pool_blend_rate
        for name in ("pool_nonface_rate", "pool_occluded_rate", "pool_blend_rate",
                     "multi_full_fraction", "occlusion_prob", "background_clutter", "jitter_prob"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise OmniferError(f"synth config {name}={v} must lie in [0, 1]")
        if rates > 1.0:
            raise OmniferError(
                f"pool distractor rates add up to {rates:.2f} (nonface+occluded+blend); keep the sum <= 1")
        if not 0.0 <= self.intensity_min <= self.intensity_max <= 1.0:
            raise OmniferError(
                f"intensity range [{self.intensity_min}, {self.intensity_max}] is invalid; "
                "use 0 <= intensity_min <= intensity_max <= 1")
        if not 1 <= self.jpeg_quality_min <= self.jpeg_quality_max <= 100:
            raise OmniferError(
                f"JPEG quality range [{self.jpeg_quality_min}, {self.jpeg_quality_max}] is invalid; "
                "use 1 <= min <= max <= 100")
        if len(self.pool_class_probs) != 7 or min(self.pool_class_probs) < 0 or sum(self.pool_class_probs) <= 0:
            raise OmniferError(
                f"pool_class_probs={self.pool_class_probs!r} needs 7 non-negative weights "
                "(canonical order neutral..surprise)")
        if not 0.0 < self.au_threshold < 1.0:
            raise OmniferError(f"au_threshold={self.au_threshold} must lie in (0, 1)")
        return self


_BASE = SynthConfig()

PRESETS: dict[str, SynthConfig] = {
    "tiny": dataclasses.replace(
        _BASE, size=48, n_expr=28, n_va=16, n_au=16, n_multi=20, n_test=21, n_pool=60,
        n_identities_labeled=12, n_identities_test=6, n_identities_pool=20,
        pool_folder_size=25, chunk_size=16,
    ),
    "small": dataclasses.replace(
        _BASE, size=64, n_expr=350, n_va=250, n_au=250, n_multi=250, n_test=350, n_pool=2000,
        n_identities_labeled=60, n_identities_test=30, n_identities_pool=300,
    ),
    "demo": _BASE,
    # the demo's faces with a quarter of its labeled data and three times its pool: mined sets
    # several times the labeled expression count (the distillation scale benchmark)
    "scale": dataclasses.replace(
        _BASE, n_expr=1000, n_va=1000, n_au=1000, n_multi=1000, n_pool=45000,
        n_identities_pool=4500,
    ),
    "large": dataclasses.replace(
        _BASE, n_expr=20000, n_va=20000, n_au=20000, n_multi=20000, n_test=5000, n_pool=150000,
        n_identities_labeled=3000, n_identities_test=250, n_identities_pool=15000,
    ),
}


def resolve_config(preset: str = "demo", *, size: int | None = None, **overrides) -> SynthConfig:
    """The preset's config with ``size`` and ``overrides`` applied (unset = preset value)."""
    key = str(preset).strip().lower()
    if key not in PRESETS:
        raise OmniferError(
            f"unknown synth preset {preset!r}; valid presets are {', '.join(PRESETS)}")
    names = {f.name for f in fields(SynthConfig)}
    bad = sorted(k for k in overrides if k not in names)
    if bad:
        raise OmniferError(
            f"unknown synth config field(s) {', '.join(bad)}; valid fields are {', '.join(sorted(names))}")
    values = {k: v for k, v in overrides.items() if v is not None}
    if size is not None:
        values["size"] = size
    for k, v in list(values.items()):
        default = getattr(_BASE, k)
        try:
            if isinstance(default, bool):
                if isinstance(v, str):
                    if v.lower() not in ("true", "false", "1", "0", "yes", "no"):
                        raise ValueError(v)
                    v = v.lower() in ("true", "1", "yes")
                values[k] = bool(v)
            elif isinstance(default, int):
                if isinstance(v, float) and not v.is_integer():
                    raise ValueError(v)
                values[k] = int(v)
            elif isinstance(default, float):
                values[k] = float(v)
            elif isinstance(default, tuple):
                values[k] = tuple(float(x) for x in (v.split(",") if isinstance(v, str) else v))
        except (TypeError, ValueError):
            raise OmniferError(
                f"synth config {k}={v!r} is not a valid {type(default).__name__}; "
                f"give a value like {default!r}") from None
    return dataclasses.replace(PRESETS[key], **values).validate()
