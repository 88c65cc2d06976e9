import pandas as pd
import pytest
from PIL import Image

from omnifer import __version__


def test_version(run_cli):
    code, out, _ = run_cli("--version")
    assert code == 0 and __version__ in out


def test_synth_records_a_run_and_status_shows_it(run_cli, tmp_path):
    ws = tmp_path / "ws"
    code, out, err = run_cli("-q", "--workspace", ws, "synth", tmp_path / "data",
                             "--preset", "tiny", "--size", "48")
    assert code == 0, err
    assert (tmp_path / "data" / "labeled.toml").is_file()
    assert f"next: omnifer -w {ws} train --data" in out  # the workspace as typed
    status = run_cli.json("--workspace", ws, "status")
    (row,) = status["runs"]
    assert row["run"].startswith("synth/") and row["status"] == "complete"
    assert row["counts"]
    code, out, _ = run_cli("--workspace", ws, "status")
    assert code == 0 and row["run"] in out


def test_unknown_preset_is_one_line_error(run_cli, tmp_path):
    code, out, err = run_cli("-q", "-w", tmp_path, "synth", tmp_path / "d", "--preset", "huge")
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "huge" in lines[0] and "tiny" in lines[0] and "OMNIFER_DEBUG=1" in lines[0]
    # the failed attempt is recorded as such
    status = run_cli.json("-w", tmp_path, "status")
    assert status["runs"][0]["status"] == "failed"


def test_debug_env_shows_traceback(run_cli, tmp_path):
    with pytest.raises(Exception, match="huge"):
        run_cli("-q", "-w", tmp_path, "synth", tmp_path / "d", "--preset", "huge",
                env={"OMNIFER_DEBUG": "1"})


def test_data_check_missing_directory(run_cli, tmp_path):
    code, _, err = run_cli("data", "check", tmp_path / "nope")
    assert code == 2 and "does not exist" in err


def test_data_check_on_synth_spec(run_cli, tiny_synth):
    result = run_cli.json("-q", "data", "check", tiny_synth.outputs["labeled"])
    counts = result["counts"]
    assert len(counts) >= 4 and result["samples"] > 0 and result["bad"] == []


def _folder_with_corrupt_image(root):
    for k, cls in enumerate(("happiness", "sadness")):
        (root / cls).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (16, 16), (i * 40, 80 + 60 * k, 120)).save(root / cls / f"{i}.jpg")
    (root / "sadness" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")


def test_data_check_corrupt_image_policy(run_cli, tmp_path):
    _folder_with_corrupt_image(tmp_path / "db")
    code, _, err = run_cli("-q", "data", "check", tmp_path / "db")
    assert code == 1 and "broken.jpg" in err and len(err.strip().splitlines()) == 1
    result = run_cli.json("-q", "data", "check", tmp_path / "db", "--on-bad-files", "skip")
    assert result["samples"] == 4 and len(result["bad"]) == 1


def test_data_check_wrong_column_type(run_cli, tmp_path):
    Image.new("RGB", (16, 16)).save(tmp_path / "a.jpg")
    pd.DataFrame({"image": ["a.jpg"], "valence": ["high"], "arousal": [0.1]}).to_csv(
        tmp_path / "labels.csv", index=False)
    code, _, err = run_cli("-q", "data", "check", tmp_path / "labels.csv")
    assert code == 1 and "valence" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("rank", ["0", "1"])
def test_only_the_first_training_process_logs_warnings(tmp_path, rank):
    import os
    import subprocess
    import sys

    (tmp_path / "db" / "happiness").mkdir(parents=True)
    for where in ("happiness/a.jpg", "loose.jpg"):
        Image.new("RGB", (16, 16)).save(tmp_path / "db" / where)
    proc = subprocess.run([sys.executable, "-m", "omnifer", "data", "check", str(tmp_path / "db")],
                          capture_output=True, text=True, env={**os.environ, "RANK": rank})
    assert proc.returncode == 0 and "1 samples" in proc.stdout
    assert ("have no class folder and are ignored" in proc.stderr) == (rank == "0"), proc.stderr
