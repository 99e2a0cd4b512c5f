"""Explaining and extracting features again and again holds on to nothing.

Many small batches go, in turn, through every explainer (CAM, Grad-CAM, IBD, IBD's gradient
route) and through feature capture with and without gradients (`hooks.run`, as the feature
store and the explainers call it), on a vision transformer whose token layer the hooks read as
a map (`world_vit`) and on a CNN (`world_alexnet`). After a warm-up, the process's resident
memory must stay flat (within RSS_TOLERANCE), the count of live tensors must not change, and no
hook may remain on the network. On a GPU the same loop must leave CUDA's allocated memory where
the warm-up left it (within CUDA_TOLERANCE).

What a leak would cost (measured on this loop): keeping the output of one world_vit batch of 2
images with its autograd graph grows the resident memory by about 5.5 MB, so a path that
retained its graphs would add some 180 MB over the 33 batches it sees, and the tensor count
would grow by thousands; a forgotten hook keeps its captured map and runs again on every later
pass.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import ibd
from ibd.nets import architectures, hooks

from .basisfiles import write_basis

BATCHES = 200  # measured batches per model and device, after the warm-up
WARM_UP = 24  # four batches through each path
BATCH = 2
RSS_TOLERANCE = 24 * 2**20  # bytes: allocator noise, far below what a leak would add
CUDA_TOLERANCE = 1 * 2**20


def _rss() -> int:
    """The process's resident set size in bytes (Linux: /proc/self/statm)."""
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _live_tensors() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if issubclass(type(obj), torch.Tensor))


def _hook_count(module: nn.Module) -> int:
    """Hooks on `module` and its submodules, and torch's global module hooks."""
    per_module = sum(
        len(m._forward_hooks)
        + len(m._forward_pre_hooks)
        + len(m._backward_hooks)
        + len(m._backward_pre_hooks)
        for m in module.modules()
    )
    glob = nn.modules.module
    return per_module + sum(
        len(table)
        for table in (
            glob._global_forward_hooks,
            glob._global_forward_pre_hooks,
            glob._global_backward_hooks,
            glob._global_backward_pre_hooks,
        )
    )


def _workload(
    arch: str, device: str, basis: Path
) -> tuple[nn.Module, Callable[[torch.Tensor], None]]:
    """The network, and one batch through every explainer and through feature capture."""
    spec = architectures.get(arch)
    torch.manual_seed(0)
    net = spec.build(12).to(device)
    model = ibd.Model.wrap(net, layer=spec.layer, input_size=spec.input_size, name=arch)
    channels = hooks.probe(net, spec.layer, spec.input_size).features.shape[1]
    q = np.random.default_rng(0).normal(size=(16, channels))
    q -= q.mean(axis=1, keepdims=True)
    write_basis(basis, q / np.linalg.norm(q, axis=1, keepdims=True), layer=spec.layer)
    explainers = [
        ibd.CAM(model),
        ibd.GradCAM(model),
        ibd.IBD(model, basis),
        ibd.IBD(model, basis, gradient=True),
    ]

    def capture(batch: torch.Tensor) -> None:
        with torch.no_grad():
            hooks.run(net, spec.layer, batch)

    def capture_gradients(batch: torch.Tensor) -> None:
        assert hooks.run(net, spec.layer, batch, gradients=True).gradients is not None

    paths: list[Callable[[torch.Tensor], object]] = [*explainers, capture, capture_gradients]
    count = iter(range(sys.maxsize))

    def one(batch: torch.Tensor) -> None:
        """The next path in turn: each sees every sixth batch."""
        paths[next(count) % len(paths)](batch)

    return net, one


def _repeat(
    arch: str, device: str, basis: Path, memory: Callable[[], int]
) -> tuple[list[int], int, int, nn.Module]:
    """Warm up, then run BATCHES batches; the growth of `memory()` over the warm-up's level,
    sampled every 25 batches, and the live tensor counts before and after."""
    net, one = _workload(arch, device, basis)
    gen = torch.Generator().manual_seed(0)
    size = architectures.get(arch).input_size
    batches = [torch.randn(BATCH, 3, *size, generator=gen).to(device) for _ in range(8)]
    for i in range(WARM_UP):
        one(batches[i % len(batches)])
    tensors, level, growth = _live_tensors(), memory(), []
    for i in range(BATCHES):
        one(batches[i % len(batches)])
        if i % 25 == 24:
            gc.collect()
            growth.append(memory() - level)
    return growth, tensors, _live_tensors(), net


def _mib(values: list[int]) -> list[str]:
    return [f"{v / 2**20:.1f} MiB" for v in values]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
@pytest.mark.parametrize("arch", ["world_vit", "world_alexnet"])
def test_explaining_many_batches_keeps_memory_flat_on_the_cpu(
    arch: str, tmp_path: Path, one_torch_thread: None
) -> None:
    growth, before, after, net = _repeat(arch, "cpu", tmp_path / "basis.npz", _rss)
    assert max(growth) < RSS_TOLERANCE, _mib(growth)
    assert after == before  # no tensor outlives its batch
    assert _hook_count(net) == 0


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("arch", ["world_vit", "world_alexnet"])
def test_explaining_many_batches_keeps_cuda_memory_flat(arch: str, tmp_path: Path) -> None:
    def allocated() -> int:
        torch.cuda.synchronize()
        return torch.cuda.memory_allocated()

    growth, before, after, net = _repeat(arch, "cuda", tmp_path / "basis.npz", allocated)
    assert max(growth) < CUDA_TOLERANCE, _mib(growth)
    assert after == before
    assert _hook_count(net) == 0
