"""Five-point alignment to the ArcFace 112x112 template.

Coordinates follow the numpy/OpenCV convention: pixel ``(x, y)`` has its centre at the integer
point ``(x, y)``. ``align_face`` therefore gives the same crop as
``cv2.warpAffine(image, similarity_transform(landmarks, template), (size, size))`` with bilinear
sampling and a black border, without depending on OpenCV.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from omnifer.errors import OmniferError

if TYPE_CHECKING:
    from omnifer.faces.detect import Face

#: The standard ArcFace landmark template for 112x112 crops: left eye, right eye, nose tip,
#: left mouth corner, right mouth corner ("left" = on the image's left).
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
ARCFACE_112.setflags(write=False)


def check_image(image: np.ndarray) -> None:
    """Raise a one-line ``OmniferError`` unless ``image`` is an RGB uint8 array [H, W, 3]."""
    if not isinstance(image, np.ndarray):
        raise OmniferError(
            f"image must be a numpy array, got {type(image).__name__}; "
            "pass np.asarray(PIL.Image.open(path).convert('RGB'))"
        )
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise OmniferError(
            f"image must be RGB uint8 with shape [H, W, 3], got dtype {image.dtype} shape {image.shape}; "
            "convert it with np.asarray(PIL.Image.fromarray(image).convert('RGB'))"
        )


def _check_points(name: str, points: np.ndarray, n: int | None = None) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or (n is not None and points.shape[0] != n):
        want = f"[{n}, 2]" if n is not None else "[N, 2]"
        raise OmniferError(
            f"{name} must have shape {want}, got {points.shape}; pass one (x, y) row per point"
        )
    if not np.isfinite(points).all():
        raise OmniferError(f"{name} contains NaN or infinite values; pass finite (x, y) coordinates")
    return points


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The least-squares similarity (rotation, uniform scale, translation) mapping ``src`` to ``dst``.

    Umeyama (1991), without reflection. ``src`` and ``dst`` are [N, 2] point arrays (N >= 2);
    returns the 2x3 float64 matrix ``M`` with ``dst ~= src @ M[:, :2].T + M[:, 2]``.
    """
    src = _check_points("src", src)
    dst = _check_points("dst", dst, len(src))
    if len(src) < 2:
        raise OmniferError(
            f"similarity_transform needs at least 2 point pairs, got {len(src)}; pass more points"
        )
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c**2).sum() / len(src)
    if src_var < 1e-12:
        raise OmniferError("src points all coincide, so no similarity is defined; pass distinct landmarks")
    u, s, vt = np.linalg.svd(dst_c.T @ src_c / len(src))
    d = np.array([1.0, 1.0 if np.linalg.det(u) * np.linalg.det(vt) >= 0 else -1.0])
    rotation = u @ np.diag(d) @ vt
    scale = (s * d).sum() / src_var
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """Warp ``image`` so that its five ``landmarks`` land on the ArcFace template.

    ``image`` is RGB uint8 [H, W, 3] and ``landmarks`` [5, 2] in its pixel coordinates; the result
    is an RGB uint8 [size, size, 3] crop (template scaled by ``size / 112``), sampled bilinearly
    with black outside the image.
    """
    from PIL import Image

    check_image(image)
    landmarks = _check_points("landmarks", landmarks, 5)
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise OmniferError(f"size must be a positive integer, got {size!r}; pass e.g. size=112")
    matrix = similarity_transform(landmarks, ARCFACE_112.astype(np.float64) * (size / 112.0))
    inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    # PIL puts pixel centres at +0.5 on both sides; shift so that integer coordinates are centres.
    inverse[:, 2] += 0.5 - 0.5 * inverse[:, :2].sum(axis=1)
    out = Image.fromarray(image).transform(
        (int(size), int(size)),
        Image.Transform.AFFINE,
        tuple(inverse.ravel()),
        resample=Image.Resampling.BILINEAR,
        fillcolor=(0, 0, 0),
    )
    return np.asarray(out)


def detect_and_align(
    detector: Callable[[np.ndarray], list[Face]], image: np.ndarray, size: int = 112
) -> list[tuple[Face, np.ndarray]]:
    """Detect faces with ``detector`` and return each with its aligned ``size`` x ``size`` crop."""
    return [(face, align_face(image, face.landmarks, size)) for face in detector(image)]
