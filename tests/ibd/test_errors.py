"""A UserError raised in a DataLoader worker still prints as one line."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from ibd.errors import UserError, one_line


class Broken(Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> torch.Tensor:
        raise UserError(f"missing image {index}.png (index.csv line {index + 2})")


def test_a_worker_error_keeps_only_its_message() -> None:
    with pytest.raises(UserError) as caught:
        list(DataLoader(Broken(), num_workers=1))
    assert "Traceback" in str(caught.value)  # what torch hands the main process
    assert one_line(caught.value) == "missing image 0.png (index.csv line 2)"


def test_a_plain_error_is_unchanged() -> None:
    assert one_line(UserError("bad flag: --x")) == "bad flag: --x"
