"""What each torchrun process runs in tests/training/test_distributed.py: `genlab train` with a watch on
the files it writes (and optionally an injected failure), several runs per launch to save start-up time.

    python -m torch.distributed.run --standalone --nproc_per_node=2 ddp_worker.py AUDIT_DIR ARGS [::: ARGS]

Each ARGS is one `genlab` command line, run in order in the same processes (so one launch covers a fresh
run and its resume). AUDIT_DIR/rank-R.json lists every write-like file operation of rank R under the
folder holding the runs; AUDIT_DIR/rank-R-RUN.safetensors is rank R's model after each run, to check
that the replicas stayed identical. GENLAB_TEST_FAIL_RANK/_STEP/_RUN make that rank fail at that step of
the run in the folder named _RUN. The command `sync-batchnorm` checks SyncBatchNorm against BatchNorm.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

WRITE_EVENTS = ("os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.truncate", "shutil.rmtree")


def main() -> int:
    audit_dir, args = Path(sys.argv[1]), sys.argv[2:]
    rank = int(os.environ["RANK"])
    watched = str(Path(os.environ["GENLAB_TEST_WATCH"]).resolve())
    writes: list[str] = []

    def audit(event: str, event_args: tuple) -> None:
        if event == "open":
            path, mode, flags = event_args
            writing = any(c in (mode or "") for c in "wax+") or (
                mode is None and isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            )
        else:
            writing, path = event in WRITE_EVENTS, event_args[0] if event_args else ""
        if writing and isinstance(path, (str, os.PathLike)) and str(path).startswith(watched):
            writes.append(f"{event} {path}")

    sys.addaudithook(audit)

    import torch
    from safetensors.torch import save_file

    from genlab.cli import main as genlab_main
    from genlab.errors import TrainingError
    from genlab.training.trainer import Trainer

    fail_rank = int(os.environ.get("GENLAB_TEST_FAIL_RANK", "-1"))
    fail_step = int(os.environ.get("GENLAB_TEST_FAIL_STEP", "-1"))
    fail_run = os.environ.get("GENLAB_TEST_FAIL_RUN", "")
    train_step = Trainer._train_step

    def failing_step(self, batch, interval):
        if (rank, self.state.step, self.run_dir.name) == (fail_rank, fail_step, fail_run):
            raise TrainingError(f"injected failure on rank {rank} at step {fail_step}")
        train_step(self, batch, interval)

    Trainer._train_step = failing_step
    fit = Trainer.fit

    def fit_and_dump(self):
        result = fit(self)
        state = {k: v.detach().contiguous().cpu() for k, v in self.model.state_dict().items()}
        save_file(state, str(audit_dir / f"rank-{rank}-{self.run_dir.name}.safetensors"))
        return result

    Trainer.fit = fit_and_dump
    commands, current = [], []
    for arg in args + [":::"]:
        if arg == ":::":
            commands.append(current)
            current = []
        else:
            current.append(arg)
    code = 0
    for command in commands:
        torch.set_num_threads(1)
        if command == ["sync-batchnorm"]:
            check_sync_batchnorm(audit_dir, rank)
            continue
        code = genlab_main(command)
        if code:
            break
    (audit_dir / f"rank-{rank}.json").write_text(json.dumps(writes))
    return code


def check_sync_batchnorm(audit_dir: Path, rank: int) -> None:
    """SyncBatchNorm on this rank's half of a batch against BatchNorm on the whole batch (in the process
    group the runs left open): largest differences of output, input grad, weight grad, running var."""
    import torch
    import torch.distributed as dist
    from torch import nn

    from genlab.training.distributed import Distributed, convert_sync_batchnorm

    world = dist.get_world_size()
    x = torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(1)) * 3 + 1
    scale = torch.arange(3.0).view(1, 3, 1, 1)
    whole, inputs = nn.BatchNorm2d(3).train(), x.clone().requires_grad_(True)
    out = whole(inputs)
    (out * scale).pow(2).mean().backward()
    sync = convert_sync_batchnorm(nn.BatchNorm2d(3)).train()
    mine = x[rank::world].clone().requires_grad_(True)
    part = sync(mine)
    (part * scale).pow(2).mean().backward()
    Distributed(rank, world).average_gradients(list(sync.parameters()))
    pairs = {
        "output": (part, out[rank::world]),
        # rank r's loss is world x its share of the one-process mean, and the all-reduce sums them
        "input_grad": (mine.grad / world, inputs.grad[rank::world]),
        "weight_grad": (sync.weight.grad, whole.weight.grad),
        "running_var": (sync.running_var, whole.running_var),
    }
    errors = {key: float((a.detach() - b.detach()).abs().max()) for key, (a, b) in pairs.items()}
    (audit_dir / f"sync-batchnorm-rank-{rank}.json").write_text(json.dumps(errors))


if __name__ == "__main__":
    raise SystemExit(main())
