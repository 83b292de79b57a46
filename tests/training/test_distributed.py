"""Data-parallel training: 2 gloo processes on the CPU against one process with the same global batch.

Tolerance: losses and weights agree within 1e-5 (absolute and relative). Two processes add their
shares' gradients in another order than one process sums its batch, so results differ by float
rounding (measured: about 1e-7 in the weights after 14 Adam steps), not bit for bit.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from genlab.cli import main as genlab_main
from genlab.data.batching import DeviceBatches
from genlab.errors import ConfigError, DataError
from genlab.training.checkpoint import load_weights
from genlab.training.distributed import Distributed, SyncBatchNorm, convert_sync_batchnorm

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("ddp_worker.py")
TOLERANCE = 1e-5


def tiny_args(npz: Path, out: Path, model: str = "ae", epochs: int = 1, *extra: str) -> list[str]:
    settings = {
        "ae": ["model.arch=mlp", "model.hidden=[32]", "model.latent_dim=4", "model.gmm_components=3"],
        # BatchNorm in G and D: what SyncBatchNorm must keep identical on both ranks
        "gan": [
            "model.g_hidden=[32]",
            "model.d_hidden=[32]",
            "model.latent_dim=8",
            "model.d_batch_norm=true",
        ],
    }[model]
    args = ["train", "--model", model, "--data", str(npz), "--epochs", str(epochs), "--batch-size", "32"]
    args += ["--device", "cpu", "--out", str(out), "--set", "log_every=2", "--set", "grid_size=4"]
    for setting in settings:
        args += ["--set", setting]
    return args + list(extra)


def torchrun(tmp_path: Path, commands: list[list[str]], env: dict | None = None, timeout: float = 120):
    audit = tmp_path / "audit"
    audit.mkdir(exist_ok=True)
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    argv += [str(WORKER), str(audit)]
    for index, command in enumerate(commands):
        argv += ([":::"] if index else []) + command
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
        "OMP_NUM_THREADS": "1",
        "GENLAB_TEST_WATCH": str(tmp_path / "runs"),
        # gloo binds to the interface of the host name, which a container may not resolve; loopback always is
        **(
            {"GLOO_SOCKET_IFNAME": "lo"}
            if sys.platform == "linux" and "GLOO_SOCKET_IFNAME" not in os.environ
            else {}
        ),
        **(env or {}),
    }
    done = subprocess.run(argv, env=environment, capture_output=True, text=True, timeout=timeout)
    return done, audit


def records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "images_per_sec"} for line in lines]


def assert_close_records(got: list[dict], want: list[dict]) -> None:
    assert [r.keys() for r in got] == [r.keys() for r in want]
    for a, b in zip(got, want):
        assert (a["step"], a["epoch"]) == (b["step"], b["epoch"])
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=TOLERANCE, abs=TOLERANCE), key


def assert_close_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=TOLERANCE, atol=TOLERANCE, msg=key)


def checkpoint(run_dir: Path, step: int) -> dict:
    return load_weights(run_dir / "checkpoints" / f"step-{step:07d}" / "model.safetensors")


# --- fast unit tests -----------------------------------------------------------------------------------
def test_shards_are_disjoint_and_make_up_the_one_process_batch():
    images = torch.arange(40.0).view(40, 1, 1, 1)
    whole = DeviceBatches(images, None, 8, seed=3)
    shards = [DeviceBatches(images, None, 8, seed=3, shard=(r, 4)) for r in range(4)]
    for batch, *parts in zip(whole.epoch(1), *(s.epoch(1) for s in shards)):
        assert [len(p[0]) for p in parts] == [2, 2, 2, 2]
        together = torch.cat([p[0] for p in parts]).flatten().sort().values
        assert torch.equal(together, batch[0].flatten().sort().values)
    assert len(shards[0]) == len(whole)  # steps per epoch do not depend on the number of processes


def test_a_batch_that_does_not_split_evenly_is_refused():
    with pytest.raises(DataError, match="multiple of 3"):
        DeviceBatches(torch.zeros(40, 1, 1, 1), None, 8, seed=0, shard=(0, 3))


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"batch_size": 33}, "not a multiple of 2"), ({"dp_epsilon": 3.0}, "differential privacy")],
)
def test_settings_that_cannot_split_over_processes_are_one_line_errors(
    tmp_path, mnist_small, monkeypatch, settings, message
):
    from genlab.runs import resolve_config
    from genlab.training import distributed
    from genlab.training.trainer import Trainer

    two = Distributed(rank=0, world_size=2, device=torch.device("cpu"))  # as torchrun's rank 0 would see
    monkeypatch.setattr(distributed, "setup", lambda device: two)
    config = resolve_config(overrides={"model": "ae", "device": "cpu", **settings})
    with pytest.raises(ConfigError, match=message):
        Trainer(config, tmp_path / "run", dataset=mnist_small)
    assert not (tmp_path / "run").exists()


def test_one_process_context_is_free_and_exact():
    context = Distributed(device=torch.device("cpu"))
    grad = torch.tensor([1.0, 2.0])
    weight = nn.Parameter(torch.zeros(2))
    weight.grad = grad.clone()
    context.average_gradients([weight])
    assert torch.equal(weight.grad, grad)
    assert context.any_of(True, False) == (True, False) and context.is_main


def test_each_rank_draws_its_own_noise_as_a_function_of_seed_step_and_rank():
    def draw(rank: int, step: int, seed: int = 0) -> torch.Tensor:
        Distributed(rank=rank, world_size=2, device=torch.device("cpu")).seed_step(seed, step)
        return torch.randn(4)

    assert torch.equal(draw(1, 5), draw(1, 5))  # what a resumed run draws again
    assert not torch.equal(draw(0, 5), draw(1, 5))  # ranks must not duplicate each other's noise
    assert not torch.equal(draw(1, 5), draw(1, 6)) and not torch.equal(draw(1, 5), draw(1, 5, seed=1))


def test_convert_keeps_parameters_and_state_dict_names():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Sequential(nn.BatchNorm2d(2, affine=False)))
    names, weight = list(model.state_dict()), model[1].weight
    convert_sync_batchnorm(model)
    assert isinstance(model[1], SyncBatchNorm) and isinstance(model[2][0], SyncBatchNorm)
    assert model[1].weight is weight and list(model.state_dict()) == names


# --- torchrun end to end: one launch, several checks ----------------------------------------------------
@pytest.fixture(scope="module")
def launch(tmp_path_factory, mnist_small_npz):
    """One process, global batch 32, 2 epochs of 7 steps: the reference (both epoch checkpoints kept).
    Then one torchrun launch of 2 processes (start-up paid once) running, in order: a fresh 1-epoch run,
    its resume to 2 epochs (a new Trainer loading the checkpoint, as a new launch would), the same for a
    GAN with BatchNorm in D plus its unbroken 2-epoch run, SyncBatchNorm against BatchNorm, and a run in
    which rank 1 fails at step 2."""
    root = tmp_path_factory.mktemp("ddp")
    runs = root / "runs"
    assert genlab_main(tiny_args(mnist_small_npz, root / "one", "ae", 2)) == 0
    commands = [
        tiny_args(mnist_small_npz, runs / "ddp", "ae", 1),
        tiny_args(mnist_small_npz, runs / "ddp", "ae", 2, "--resume"),
        tiny_args(mnist_small_npz, runs / "gan", "gan", 1),
        tiny_args(mnist_small_npz, runs / "gan", "gan", 2, "--resume"),
        tiny_args(mnist_small_npz, runs / "gan-full", "gan", 2),
        ["sync-batchnorm"],
        tiny_args(mnist_small_npz, runs / "fail", "ae", 1),
    ]
    fail = {"GENLAB_TEST_FAIL_RANK": "1", "GENLAB_TEST_FAIL_STEP": "2", "GENLAB_TEST_FAIL_RUN": "fail"}
    done, audit = torchrun(root, commands, {**fail, "GENLAB_DIST_TIMEOUT": "60"}, timeout=180)
    assert done.stdout.count("done:") == 5, done.stderr[-3000:]  # one summary per run, from rank 0
    return {"root": root, "reference": root / "one", "runs": runs, "audit": audit, "done": done}


@pytest.mark.slow
def test_two_processes_match_one_process_also_after_resume(launch):
    ddp, reference = launch["runs"] / "ddp", launch["reference"]
    assert_close_records(records(ddp), records(reference))
    for step in (7, 14):  # after the fresh run, and after its resume under DDP
        assert_close_weights(checkpoint(ddp, step), checkpoint(reference, step))


@pytest.mark.slow
def test_a_stochastic_family_resumes_exactly_under_ddp(launch):
    """Each rank's noise is a function of (seed, step, rank), so a resumed 2-process GAN draws what the
    unbroken one drew: same losses and weights, bit for bit (same processes, same order of sums)."""
    resumed, full = launch["runs"] / "gan", launch["runs"] / "gan-full"
    assert records(resumed) == records(full)
    a, b = checkpoint(resumed, 14), checkpoint(full, 14)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_only_rank_0_writes_files_and_the_replicas_stay_identical(launch):
    audit = launch["audit"]
    assert json.loads((audit / "rank-1.json").read_text()) == []
    assert any("metrics.jsonl" in w for w in json.loads((audit / "rank-0.json").read_text()))
    for run in ("ddp", "gan"):
        rank0, rank1 = (load_weights(audit / f"rank-{r}-{run}.safetensors") for r in (0, 1))
        for key in rank0:
            assert torch.equal(rank0[key], rank1[key]), (run, key)
    gan = records(launch["runs"] / "gan")
    assert gan and all(math.isfinite(r["loss_d"]) for r in gan)


@pytest.mark.slow
def test_sync_batchnorm_on_two_processes_equals_batchnorm_on_the_whole_batch(launch):
    """Output, input and weight gradients, running statistics: those of the global batch, on gloo/CPU."""
    for rank in (0, 1):
        errors = json.loads((launch["audit"] / f"sync-batchnorm-rank-{rank}.json").read_text())
        assert set(errors) == {"output", "input_grad", "weight_grad", "running_var"}
        assert max(errors.values()) < TOLERANCE, errors


@pytest.mark.slow
def test_resume_a_two_process_run_in_one_process(launch, mnist_small_npz):
    single = launch["root"] / "single"
    shutil.copytree(launch["runs"] / "ddp", single)
    shutil.rmtree(single / "checkpoints" / "step-0000014")  # LATEST falls back to the epoch-1 checkpoint
    assert genlab_main(tiny_args(mnist_small_npz, single, "ae", 2, "--resume")) == 0
    assert_close_records(records(single), records(launch["reference"]))
    assert_close_weights(checkpoint(single, 14), checkpoint(launch["reference"], 14))


@pytest.mark.slow
def test_a_failing_rank_takes_the_job_down_with_its_message(launch):
    done = launch["done"]
    assert done.returncode != 0  # torchrun stopped the job; it did not hang (the launch has a timeout)
    assert "genlab: error: injected failure on rank 1 at step 2" in done.stderr
    assert "genlab: error: rank 0 of 2: " in done.stderr  # the survivor says why it stops, in one line
    assert done.stderr.count("Traceback (most recent call last)") <= 1  # torchrun's own summary only
    assert not (launch["runs"] / "fail" / "checkpoints").exists()
