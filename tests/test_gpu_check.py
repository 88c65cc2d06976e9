"""bench/gpu_check.py: its checks run with the CPU standing in, and a failure is reported."""

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("faiss")

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


@pytest.fixture
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_checks_pass_with_the_cpu_standing_in(gpu_check, capsys):
    code = gpu_check.main(["--device", "cpu", "--only",
                           "faiss flat,faiss ivf,index gpu->cpu write,mining scorer,ddp 2 gpus"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0 and out[-1] == "gpu check: PASS"
    assert [line.split()[0] for line in out[1:-2]] == ["PASS"] * 4 + ["SKIP"]


def test_a_failing_check_fails_the_run(gpu_check, capsys, monkeypatch):
    def broken(device, rng):
        raise AssertionError("scores differ")

    monkeypatch.setattr(gpu_check, "CHECKS", [("broken", broken), *gpu_check.CHECKS[-1:]])
    assert gpu_check.main(["--device", "cpu"]) == 1
    out = capsys.readouterr().out
    assert "FAIL broken: AssertionError: scores differ" in out
    assert out.rstrip().endswith("gpu check: FAIL")


def test_without_cuda_every_check_is_skipped_with_a_clear_line(gpu_check, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert gpu_check.main([]) == 0
    lines = capsys.readouterr().out.rstrip().splitlines()
    skips = [line for line in lines if line.startswith("SKIP ")]
    assert len(skips) == len(gpu_check.CHECKS)
    assert all("torch sees no CUDA device" in line for line in skips)
    assert lines[-1] == "gpu check: PASS (nothing ran on a GPU)"
