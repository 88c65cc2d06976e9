"""``omnifer predict`` and ``pipeline.predict``: a trained model on image files, folders and
videos, its calibrated probabilities, uncertainty, OOD scores and the written tables."""

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pd = pytest.importorskip("pandas")

from omnifer import pipeline  # noqa: E402
from omnifer.errors import OmniferError  # noqa: E402
from omnifer.train.predict_config import PredictConfig  # noqa: E402
from test_pools_sources import write_video  # noqa: E402

CPU = PredictConfig(device="cpu")


@pytest.fixture(scope="module")
def ws(tiny_synth, tmp_path_factory):
    """A workspace with an ensemble of two tiny convnets (32 px, one epoch)."""
    from omnifer.train import TrainConfig

    root = tmp_path_factory.mktemp("predict-ws")
    rec = pipeline.train(root, TrainConfig(backbone="convnet", input_size=32, epochs=1,
                                           batch_size=16, ensemble=2, device="cpu"),
                         data=tiny_synth.labeled_toml)
    return root, rec


@pytest.fixture(scope="module")
def test_images(tiny_synth):
    return Path(tiny_synth.out) / "test" / "images"


@pytest.fixture
def photos(test_images, tmp_path):
    """A folder tree: four test images in two nested subfolders and one corrupt JPEG."""
    root = tmp_path / "photos"
    files = sorted(test_images.glob("*.jpg"))[:4]
    for i, f in enumerate(files):
        dst = root / ("a" if i < 2 else "a/b") / f.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dst)
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def one_line(exc_info, *parts):
    text = str(exc_info.value)
    assert "\n" not in text, text
    for part in parts:
        assert part in text, text



def test_probabilities_are_calibrated_and_match_the_ensemble(ws, tiny_synth, test_images,
                                                              tmp_path):
    from omnifer.data import read_labeled
    from omnifer.data.batches import BatchMaker
    from omnifer.data.cache import decoded_images
    from omnifer.models import load_models
    from omnifer.models.inference import ensemble, predict, uncertainty

    root, rec = ws
    res = pipeline.predict(root, CPU, model=rec.ref, inputs=[test_images])
    t = res.table
    models = load_models(rec.path)
    cfg = models[0].config
    probs = t[[f"p_{c}" for c in cfg.expressions]].to_numpy()
    assert res.members == 2 and len(t) == res.counts["faces"] == res.counts["images"] == 21
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)
    assert (t["predicted"] == np.asarray(cfg.expressions)[probs.argmax(1)]).all()
    assert np.allclose(t["confidence"], probs.max(1))
    # the same images as labeled data, through evaluate's decoding and the ensemble mean
    test = read_labeled(tiny_synth.test_toml)
    images = decoded_images(test, cfg.input_size, tmp_path / "cache")
    maker = BatchMaker(images, mean=cfg.mean, std=cfg.std, device=torch.device("cpu"))
    pred = ensemble(models, [predict(m, maker, np.arange(len(images))) for m in models])
    unc = uncertainty(pred)
    order = [str(Path(p).resolve()) for p in test.table["image"]]
    mine = t.set_index(t["source"].map(lambda p: str(Path(p).resolve()))).loc[order]
    assert np.allclose(mine[[f"p_{c}" for c in cfg.expressions]], pred["expression_probs"],
                       atol=1e-5)
    assert np.allclose(mine[["valence", "arousal"]], pred["va"], atol=1e-5)
    assert np.allclose(mine[[f"{a}_prob" for a in cfg.aus]], pred["au_probs"], atol=1e-5)
    assert (mine[list(cfg.aus)].to_numpy() == (pred["au_probs"] >= pred["au_thresholds"])).all()
    assert np.allclose(mine["uncertainty_expression_total"], unc["expression_total"], atol=1e-5)
    # every OOD score, the distance to the training set's embeddings included
    assert {f"ood_{k}" for k in ("max_softmax", "entropy", "epistemic", "distance")} <= set(t)
    assert np.allclose(t["ood_max_softmax"], 1 - t["confidence"], atol=1e-6)
    assert (t["ood_distance"] >= -1e-6).all() and t["ood_distance"].std() > 0


def test_probabilities_use_the_models_temperature(ws, photos, tmp_path):
    from omnifer import metrics as M
    from omnifer.data.batches import BatchMaker
    from omnifer.data.images import decode_image
    from omnifer.models import load_checkpoint
    from omnifer.models.inference import predict

    root, rec = ws
    hot = tmp_path / "hot"
    shutil.copytree(rec.members[0], hot)
    meta = json.loads((hot / "model.json").read_text())
    meta["config"]["temperature"] = 0.05
    (hot / "model.json").write_text(json.dumps(meta))
    t = pipeline.predict(root, CPU, model=hot, inputs=[photos]).table
    model = load_checkpoint(hot)
    crops = np.stack([decode_image(p, 32) for p in t["source"]])
    cfg = model.config
    logits = predict(model, BatchMaker(crops, mean=cfg.mean, std=cfg.std,
                                       device=torch.device("cpu")), np.arange(len(crops)))
    probs = t[[f"p_{c}" for c in cfg.expressions]].to_numpy()
    assert np.allclose(probs, M.softmax(logits["expression"], temperature=0.05), atol=1e-4)
    assert not np.allclose(probs, M.softmax(logits["expression"]), atol=1e-3)


def test_tables_round_trip_in_every_format(ws, photos, tmp_path):
    root, rec = ws
    first = None
    for name, read in (("p.csv", pd.read_csv), ("p.parquet", pd.read_parquet),
                       ("p.json", lambda p: pd.read_json(p, orient="records"))):
        res = pipeline.predict(root, CPU, model=rec.ref, inputs=[photos], output=tmp_path / name)
        assert res.output == tmp_path / name and not list(tmp_path.glob(".*.tmp"))
        back = read(res.output)
        assert list(back.columns) == list(res.table.columns) and len(back) == 4
        pd.testing.assert_frame_equal(back, res.table, check_dtype=False, atol=1e-6)
        first = res.table if first is None else first
        pd.testing.assert_frame_equal(res.table, first)
    res = pipeline.predict(root, CPU.replace(format="csv"), model=rec.ref, inputs=[photos],
                           output=tmp_path / "table.txt")
    assert len(pd.read_csv(res.output)) == 4
    with pytest.raises(OmniferError) as err:
        pipeline.predict(root, CPU, model=rec.ref, inputs=[photos], output=tmp_path / "p.xlsx")
    one_line(err, "p.xlsx", "--format")


def test_nested_folder_with_a_corrupt_file(ws, photos):
    root, rec = ws
    res = pipeline.predict(root, CPU, model=rec.ref, inputs=[photos])
    assert res.counts == {"images": 4, "faces": 4, "skipped": 1, "no_face": 0}
    assert sorted(Path(s).relative_to(photos).parent.as_posix() for s in res.table["source"]) \
        == ["a", "a", "a/b", "a/b"]
    single = pipeline.predict(root, CPU, model=rec.ref,
                              inputs=[res.table["source"][3], res.table["source"][0]])
    assert list(single.table["source"]) == [res.table["source"][3], res.table["source"][0]]
    assert np.allclose(single.table["p_neutral"], res.table["p_neutral"][[3, 0]], atol=1e-6)
    with pytest.raises(OmniferError) as err:
        pipeline.predict(root, CPU.replace(on_bad_files="error"), model=rec.ref,
                         inputs=[photos])
    one_line(err, "broken.jpg", "--on-bad-files skip")


def test_folders_without_a_readable_image_are_one_line_errors(ws, tmp_path):
    root, rec = ws
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(OmniferError) as err:
        pipeline.predict(root, CPU, model=rec.ref, inputs=[empty])
    one_line(err, str(empty), "pass a folder of images")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.png").write_bytes(b"garbage")
    with pytest.raises(OmniferError) as err:
        pipeline.predict(root, CPU, model=rec.ref, inputs=[broken])
    one_line(err, "no readable image", str(broken), "1 unreadable")
    with pytest.raises(OmniferError) as err:
        pipeline.predict(root, CPU, model=rec.ref, inputs=[tmp_path / "nowhere"])
    one_line(err, "nowhere", "does not exist")


def test_epistemic_uncertainty_of_ensembles_members_and_dropout(ws, photos):
    root, rec = ws
    both = pipeline.predict(root, CPU, model=rec.ref, inputs=[photos]).table
    assert (both["uncertainty_expression_epistemic"] > 0).any()
    assert (both["ood_epistemic"] == both["uncertainty_expression_epistemic"]).all()
    one = pipeline.predict(root, CPU, model=f"{rec.ref}@1", inputs=[photos])
    assert one.members == 1 and one.model == rec.members[1].resolve()
    assert (one.table["uncertainty_expression_epistemic"] == 0).all()
    assert not np.allclose(one.table["p_neutral"], both["p_neutral"])
    # the ensemble's probabilities are the mean of its members'
    other = pipeline.predict(root, CPU, model=f"{rec.ref}@0", inputs=[photos]).table
    assert not np.allclose(one.table["p_neutral"], other["p_neutral"])
    assert np.allclose((one.table["p_neutral"] + other["p_neutral"]) / 2, both["p_neutral"],
                       atol=1e-5)
    mc = pipeline.predict(root, CPU.replace(mc_dropout=8, mc_rate=0.5), model=f"{rec.ref}@1",
                          inputs=[photos]).table
    assert (mc["uncertainty_expression_epistemic"] > 0).any()
    assert np.allclose(mc[[c for c in mc if c.startswith("p_")]].sum(axis=1), 1, atol=1e-5)


def test_distance_left_out_with_one_warning_when_the_training_data_is_gone(ws, photos,
                                                                          tmp_path, caplog,
                                                                          model_dir):
    root, rec = ws
    moved = tmp_path / "moved-ws"
    shutil.copytree(root, moved)
    manifest = moved / ".omnifer/runs/train" / rec.run_id / "manifest.json"
    data = json.loads(manifest.read_text())
    data["config"]["data"] = ["gone/labeled.toml"]
    manifest.write_text(json.dumps(data))
    caplog.set_level(logging.WARNING, logger="omnifer.pipeline.predict")
    res = pipeline.predict(moved, CPU, model=rec.ref, inputs=[photos])
    assert "ood_distance" not in res.table and "ood_entropy" in res.table
    gone = [r for r in caplog.records if "distance score is left out" in r.getMessage()]
    assert len(gone) == 1 and "labeled.toml" in gone[0].getMessage()
    caplog.clear()
    res = pipeline.predict(moved, CPU.replace(distance=False), model=rec.ref, inputs=[photos])
    assert "ood_distance" not in res.table and not caplog.records
    # a bare checkpoint folder (no train run): one model, no distance
    res = pipeline.predict(moved, CPU, model=model_dir, inputs=[photos])
    assert res.members == 1 and "ood_distance" not in res.table


def test_video_frames_are_sampled_and_identified(ws, photos, tmp_path, run_cli):
    pytest.importorskip("av")
    root, rec = ws
    clip = tmp_path / "clip.mp4"
    write_video(clip, size=40)
    image = next(p for p in sorted(photos.rglob("*.jpg")) if p.name != "broken.jpg")
    res = pipeline.predict(root, CPU.replace(fps=2), model=rec.ref, inputs=[clip, image])
    t = res.table
    video = t[t["source"] == str(clip)]
    assert len(video) == 6 and res.counts["images"] == 7
    assert list(video["frame"]) == [0, 1, 2, 3, 4, 5]
    assert np.allclose(video["time"], [0, 0.5, 1, 1.5, 2, 2.5])
    row = t[t["source"] == str(image)]
    assert len(row) == 1 and pd.isna(row["frame"].iloc[0]) and np.isnan(row["time"].iloc[0])
    back = pipeline.predict(root, CPU.replace(fps=2), model=rec.ref, inputs=[clip],
                            output=tmp_path / "v.parquet")
    assert list(pd.read_parquet(back.output)["frame"]) == [0, 1, 2, 3, 4, 5]
    r = run_cli.json("-q", "-w", root, "predict", rec.ref, clip, image, "--fps", "2",
                     "--device", "cpu")
    assert [row["frame"] for row in r["rows"]] == [0, 1, 2, 3, 4, 5, None]
    code, out, err = run_cli("-q", "-w", root, "predict", rec.ref, clip, "--device", "cpu")
    assert code == 0 and out.splitlines()[1].startswith(f"{clip} @1.0s")


def test_faces_are_detected_in_photos(ws, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("retinaface.weights")
    data = pytest.importorskip("skimage.data")
    from PIL import Image

    root, rec = ws
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(data.astronaut()).save(folder / "astronaut.jpg", quality=95)
    Image.new("RGB", (200, 200), (128, 128, 128)).save(folder / "gray.png")
    res = pipeline.predict(root, CPU.replace(detect="retinaface"), model=rec.ref,
                           inputs=[folder])
    assert res.counts == {"images": 2, "faces": 1, "skipped": 0, "no_face": 1}
    (row,) = res.table.to_dict("records")
    assert row["source"].endswith("astronaut.jpg") and row["face"] == 0
    assert 0 <= row["x1"] < row["x2"] <= 512 and 0 <= row["y1"] < row["y2"] <= 512
    assert row["det_score"] > 0.9


def test_config_is_validated_in_one_line():
    for bad, part in ((dict(batch_size=0), "batch_size"), (dict(mc_dropout=-1), "mc_dropout"),
                      (dict(mc_rate=1.5), "mc_rate"), (dict(fps=0), "fps"),
                      (dict(detect="mtcnn"), "--detect retinaface"),
                      (dict(on_bad_files="ignore"), "on_bad_files"),
                      (dict(format="xlsx"), "--format"), (dict(device="tpu"), "tpu"),
                      (dict(batch_sizes=2), "batch_size")):
        with pytest.raises(OmniferError) as err:
            PredictConfig().replace(**bad)
        one_line(err, part)
    assert PredictConfig(format="CSV").format == "csv"


def test_cli_prints_a_table_json_and_files(ws, photos, tmp_path, run_cli):
    root, rec = ws
    code, out, err = run_cli("-q", "-w", root, "predict", rec.ref, photos, "--device", "cpu")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 5 and all("uncertainty" in line and " V " in line for line in lines[:4])
    assert lines[-1].startswith("4 faces in 4 images, 1 unreadable skipped")
    assert "(2 member(s)" in lines[-1]
    r = run_cli.json("-q", "-w", root, "predict", f"{rec.ref}@0", photos, "--device", "cpu",
                     "--mc-dropout", "4")
    assert r["members"] == 1 and r["counts"]["faces"] == 4 and len(r["rows"]) == 4
    assert abs(sum(v for k, v in r["rows"][0].items() if k.startswith("p_")) - 1) < 1e-5
    code, out, err = run_cli("-q", "-w", root, "predict", rec.ref, photos, "--device", "cpu",
                             "--format", "csv")
    assert code == 0 and out.startswith("source,predicted,confidence,p_")
    assert len(out.strip().splitlines()) == 5
    dst = tmp_path / "out" / "faces.json"
    code, out, err = run_cli("-q", "-w", root, "predict", rec.ref, photos, "--device", "cpu",
                             "-o", dst)
    assert code == 0 and out.startswith(f"wrote {dst}") and len(json.loads(dst.read_text())) == 4
    code, out, err = run_cli("-w", root, "predict", rec.ref, photos, "--format", "parquet")
    assert code == 1 and "--output FILE.parquet" in err and err.count("\n") == 1
    code, out, err = run_cli("-w", root, "predict", f"{rec.ref}@7", photos)
    assert code == 1 and "not 7" in err and err.count("\n") == 1
