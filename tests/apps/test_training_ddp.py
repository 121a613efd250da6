"""`fxpath.PathNormPenalty` and `fxpath.PathSGD` on a DistributedDataParallel model.

The test starts two gloo processes on the CPU itself (localhost, a free port): each trains on
half of every batch; their parameters must equal, to 1e-10 in float64, those of one process
trained on the whole batches (mean-reduced losses: DDP averages the halves' gradients; the
penalty's gradient is the same on both ranks, so averaging leaves it unchanged).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F

import fxpath

SHAPE = (2, 6, 6)
STEPS = 4
LAM = 0.05


def _model() -> nn.Module:
    """conv-BN-ReLU (frozen BatchNorm), a residual conv, a strided conv, linear; float64."""
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4)
            self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
            self.conv3 = nn.Conv2d(4, 3, 3, stride=2)
            self.fc = nn.Linear(3 * 2 * 2, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = F.relu(self.bn1(self.conv1(x)))
            x = F.relu(x + self.conv2(x))
            return self.fc(F.relu(self.conv3(x)).flatten(1))

    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        net.bn1.running_mean.uniform_(-0.5, 0.5)
        net.bn1.running_var.uniform_(0.5, 1.5)
        net.bn1.weight.uniform_(0.5, 1.5)
        net.bn1.bias.uniform_(-0.5, 0.5)
    return net.double().eval()


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(8, *SHAPE, generator=gen, dtype=torch.float64),
             torch.randint(3, (8,), generator=gen)) for _ in range(STEPS)]


def _train(model: nn.Module, rank: int = 0, world: int = 1) -> dict[str, torch.Tensor]:
    """A few steps of PathSGD (momentum) on cross-entropy plus the l^1 path-norm penalty;
    this rank's share of every batch."""
    penalty = fxpath.PathNormPenalty(model, SHAPE)
    opt = fxpath.PathSGD(model, SHAPE, lr=0.05, momentum=0.9)
    for x, y in _batches():
        part = slice(rank * len(x) // world, (rank + 1) * len(x) // world)
        opt.zero_grad()
        loss = F.cross_entropy(model(x[part]), y[part]) + LAM * penalty()
        loss.backward()
        opt.step()
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    return {k: v.detach().clone() for k, v in inner.state_dict().items()}


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        state = _train(nn.parallel.DistributedDataParallel(_model()), rank, world)
        torch.save(state, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two spawned processes (~8 s): CI runs it, -m slow
def test_two_gloo_processes_match_one_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = _model().state_dict()
        alone = _train(_model())
    finally:
        torch.set_num_threads(threads)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    moved = max(float((alone[k] - start[k]).abs().max()) for k in alone)
    assert moved > 1e-3  # the steps did move the parameters
    for name, want in alone.items():
        for r, state in enumerate(ranks):
            torch.testing.assert_close(state[name], want, rtol=1e-10, atol=1e-10,
                                       msg=lambda m, n=name, r=r: f"rank {r}, {n}: {m}")
