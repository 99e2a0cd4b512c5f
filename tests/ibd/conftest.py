"""Fixtures shared by the `ibd` tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture()
def one_torch_thread() -> Iterator[None]:
    """These tensors are tiny: with one torch thread no step waits on a thread that a busy 2-core
    machine has descheduled (results do not depend on the thread count)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
