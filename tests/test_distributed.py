"""Data-parallel training: 2 CPU processes (Gloo) against one process with the same batch."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from omnifer.errors import OmniferError  # noqa: E402

#: a small learning rate keeps float rounding (summation order) from growing through Adam
#: steps, so that runs equal up to rounding stay within the tolerance below
ARGS = ["--backbone", "convnet", "--size", "32", "--epochs", "6", "--batch-size", "8",
        "--lr", "1e-4", "--device", "cpu", "--patience", "0"]


def _train(ws, synth, config, *extra):
    """``omnifer train`` in new processes (as a user types it); returns the Popen."""
    cmd = [sys.executable, "-m", "omnifer", "-q", "-w", str(ws), "train", "--data",
           str(synth.labeled_toml), "--config", str(config), *ARGS, *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)


def _finish(proc):
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return out


def _runs(ws):
    return sorted((Path(ws) / ".omnifer" / "runs" / "train").iterdir())


def _weights(run):
    from safetensors.torch import load_file

    return load_file(run / "members" / "0" / "model" / "model.safetensors")


def _relative_difference(a, b):
    num = sum(float(((a[k].double() - b[k].double()) ** 2).sum()) for k in a)
    return (num / sum(float((a[k].double() ** 2).sum()) for k in a)) ** 0.5


def _losses(run):
    history = json.loads((run / "members" / "0" / "history.json").read_text())
    return [e["epoch"] for e in history], np.array([e["loss"]["total"] for e in history])


@pytest.fixture(scope="module")
def setup(tiny_synth, tmp_path_factory):
    """The options file (no dropout: each process draws its own masks) and a one-process run
    of the same training, the reference."""
    root = tmp_path_factory.mktemp("ddp")
    config = root / "train.toml"
    config.write_text("[train]\ndropout = 0.0\n")
    one = root / "one"
    _finish(_train(one, tiny_synth, config))
    (run,) = _runs(one)
    return root, config, run


def test_two_processes_train_what_one_process_trains(setup, tiny_synth):
    root, config, reference = setup
    ws = root / "two"
    _finish(_train(ws, tiny_synth, config, "--nproc-per-node", "2"))
    (run,) = _runs(ws)  # one run: only rank 0 records
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["counts"]["processes"] == 2
    assert (run / "split.json").read_text() == (reference / "split.json").read_text()
    # the same global batches, statistics and loss: equal up to float rounding
    assert _relative_difference(_weights(reference), _weights(run)) < 1e-3
    epochs, losses = _losses(run)
    ref_epochs, ref_losses = _losses(reference)
    assert epochs == ref_epochs == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-3)


def _rank_process(parent, local_rank):
    """The pid of the training process of ``local_rank`` started under ``parent``."""
    def ancestors(pid):
        while pid > 1:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
            yield pid

    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            if f"LOCAL_RANK={local_rank}".encode() in env and parent in ancestors(int(entry.name)):
                return int(entry.name)
        except (OSError, ValueError, IndexError):
            continue
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc (Linux)")
def test_a_run_whose_process_was_killed_resumes(setup, tiny_synth):
    root, config, reference = setup
    ws = root / "killed"
    proc = _train(ws, tiny_synth, config, "--nproc-per-node", "2")
    deadline = time.monotonic() + 240
    history = None
    while time.monotonic() < deadline and proc.poll() is None:
        runs = _runs(ws) if (ws / ".omnifer" / "runs" / "train").is_dir() else []
        history = runs and runs[0] / "members" / "0" / "history.json"
        if history and history.is_file():
            break
        time.sleep(0.02)
    assert history and history.is_file(), "the run wrote no epoch"
    pid = _rank_process(proc.pid, 1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # rank 1 dies; torchrun stops rank 0
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    (run,) = _runs(ws)
    assert json.loads((run / "manifest.json").read_text())["status"] != "complete"
    done = len(json.loads(history.read_text()))
    assert 1 <= done < 6

    _finish(_train(ws, tiny_synth, config, "--nproc-per-node", "2"))  # the same command
    (again,) = _runs(ws)
    manifest = json.loads((again / "manifest.json").read_text())
    assert again == run and manifest["status"] == "complete" and manifest["resumed"] >= 1
    epochs, _ = _losses(run)
    assert epochs == [1, 2, 3, 4, 5, 6]  # every epoch once: none trained again
    assert _relative_difference(_weights(reference), _weights(run)) < 1e-3


def test_a_batch_that_does_not_split_over_the_processes_is_one_line(run_cli, tiny_synth):
    from omnifer.train.config import check_processes

    with pytest.raises(OmniferError, match="batch size 9 does not split evenly over 2 "
                                           "processes; use a multiple of 2, e.g. --batch-size 8"):
        check_processes(9, 2)
    code, _, err = run_cli("train", "--data", tiny_synth.labeled_toml, "--batch-size", "9",
                           "--nproc-per-node", "2", "--device", "cpu")
    assert code != 0 and "does not split evenly" in err and len(err.strip().splitlines()) == 1


@pytest.fixture
def one_rank_group(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("shape", [(6, 4, 5, 5), (6, 4)])
def test_group_batch_norm_is_batch_norm_on_the_global_batch(one_rank_group, shape):
    from omnifer.train.distributed import GroupBatchNorm

    torch.manual_seed(0)
    ref = torch.nn.BatchNorm2d(4) if len(shape) == 4 else torch.nn.BatchNorm1d(4)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 2)
        ref.bias.uniform_(-1, 1)
    ours = GroupBatchNorm(4)
    ours.load_state_dict(ref.state_dict())
    for step in range(2):  # the running statistics move twice
        x = torch.randn(*shape) * 3 + step
        w = torch.randn(*shape)
        outs, grads = [], []
        for bn in (ref, ours):
            xi = x.clone().requires_grad_()
            y = bn(xi)
            (y * w).sum().backward()
            outs.append(y.detach())
            grads.append((xi.grad, bn.weight.grad.clone(), bn.bias.grad.clone()))
            bn.zero_grad()
        torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-5)
        for a, b in zip(grads[1], grads[0]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for key in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(ours, key), getattr(ref, key))
    ours.eval(), ref.eval()
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-5)
