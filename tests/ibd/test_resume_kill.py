"""Long stages survive `kill -9`: feature extraction and basis learning (both procedures) killed
half way by SIGKILL, then re-run, end with exactly the result of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_basis import planted_store

from ibd import basis
from ibd.data import features

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# A dataset and a network that the killed child and this process both import.
SLOW_DATA = '''
import time
import numpy as np
import torch
from torch import nn
from ibd.data.broden import Concept


class Slow(torch.utils.data.Dataset):
    """40 random 3 x 8 x 8 images with 5-concept masks; `delay` seconds per item."""

    def __init__(self, delay: float = 0.0) -> None:
        rng = np.random.default_rng(0)
        self.x = torch.from_numpy(rng.normal(size=(40, 3, 8, 8)).astype(np.float32))
        self.masks = torch.from_numpy(rng.random((40, 5, 8, 8)) < 0.3)
        self.concepts = [Concept(c, c + 1, f"c{c}", "object", 40) for c in range(5)]
        self.delay = delay

    def __len__(self):
        return 40

    def __getitem__(self, i):
        time.sleep(self.delay)
        return {"image": self.x[i], "mask": self.masks[i], "index": i, "path": f"im{i}.png"}

    def image_path(self, i):
        from pathlib import Path
        return Path(f"im{i}.png")

    def split_of(self, i):
        return "val" if i % 4 == 3 else "train"


def network():
    torch.manual_seed(0)
    return Wrapped(nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU()))


class Wrapped(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.features = net

    def forward(self, x):
        return self.features(x).mean(dim=(2, 3))


def spec():
    from ibd.data.features import StoreSpec
    return StoreSpec(model={"name": "slow"}, layer="features", dataset={"fingerprint": "slow"})
'''

EXTRACT = """
import sys
import torch
sys.path.insert(0, sys.argv[1])
from slowdata import Slow, network, spec
from ibd.data import features
torch.set_num_threads(1)
features.build(network(), Slow(delay=0.1), sys.argv[2], spec(), batch_size=4, progress=False)
"""

LEARN = """
import json
import sys
import time
import torch
from ibd import basis
from ibd.data.features import FeatureStore
torch.set_num_threads(1)
real = basis.Checkpoint.save


def slow(self, **state):
    real(self, **state)
    time.sleep(0.25)  # time for the test to kill it between epochs as well as within


basis.Checkpoint.save = slow
settings = basis.Settings.for_procedure(sys.argv[2], **json.loads(sys.argv[3]))
basis.learn(FeatureStore(sys.argv[1]), settings, progress=False, log=lambda _: None,
            checkpoint=sys.argv[4])
"""


def kill_when(command: list[str], ready: Callable[[], bool], limit: float = 25.0) -> None:
    """Start `command`, SIGKILL it as soon as `ready()` holds; fail if it ends first."""
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + limit
    try:
        while not ready():
            if child.poll() is not None:
                out = child.stdout.read().decode() if child.stdout else ""
                pytest.fail(f"the child ended before it could be killed:\n{out}")
            if time.monotonic() > deadline:
                pytest.fail("the child never reached the point to kill it at")
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL


def test_feature_extraction_killed_half_way_resumes_to_identical_files(tmp_path: Path) -> None:
    (tmp_path / "slowdata.py").write_text(SLOW_DATA)
    sys.path.insert(0, str(tmp_path))
    try:
        import slowdata
    finally:
        sys.path.remove(str(tmp_path))
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    features.build(
        slowdata.network(), slowdata.Slow(), whole, slowdata.spec(), batch_size=4, progress=False
    )

    def half_done() -> bool:
        try:
            done = json.loads((cut / "progress.json").read_text())["images_done"]
        except (OSError, ValueError, KeyError):
            return False
        return 16 <= done < 40

    kill_when([sys.executable, "-c", EXTRACT, str(tmp_path), str(cut)], half_done)
    progress = json.loads((cut / "progress.json").read_text())
    assert not progress["complete"] and 16 <= progress["images_done"] < 40
    loads: list[int] = []
    counting = _Counting(slowdata.Slow(), loads)
    store = features.build(
        slowdata.network(), counting, cut, slowdata.spec(), batch_size=4, progress=False
    )
    assert store.num_images == 40
    assert min(loads) == progress["images_done"]  # it went on, it did not start again
    for name in ("features.npy", "labels.npy", "images.csv", "concepts.json", "header.json"):
        assert (cut / name).read_bytes() == (whole / name).read_bytes()


class _Counting(torch.utils.data.Dataset):
    """`data` with every item index it is asked for recorded in `loads`."""

    def __init__(self, data: Any, loads: list[int]) -> None:
        self.data, self.loads, self.concepts = data, loads, data.concepts

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, Any]:
        self.loads.append(i)
        return self.data[i]

    def image_path(self, i: int) -> Path:
        return self.data.image_path(i)

    def split_of(self, i: int) -> str:
        return self.data.split_of(i)


def _epoch_state(path: Path) -> dict[str, Any] | None:
    try:
        state = torch.load(path, weights_only=True)
    except (OSError, RuntimeError, EOFError):
        return None
    return {k: v for k, v in state.items() if k in ("round", "epoch")}


@pytest.mark.parametrize(
    ("procedure", "overrides", "kill_at"),
    [
        # killed inside the second round (an Adam state and that round's negatives to restore)
        ("paper", {"epochs": 4, "rounds": 2, "batch_size": 256}, {"round": 1, "epoch": 2}),
        ("authors", {"epochs": 6}, {"epoch": 3}),
    ],
)
def test_basis_learning_killed_half_way_resumes_to_the_same_basis(
    tmp_path: Path,
    procedure: str,
    overrides: dict[str, Any],
    kill_at: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, _ = planted_store(tmp_path, rate=0.05)
    settings = basis.Settings.for_procedure(procedure, **overrides)
    quiet = {"progress": False, "log": lambda _: None}
    uninterrupted = basis.learn(store, settings, **quiet)
    checkpoint = tmp_path / "basis.npz.partial.pt"

    def reached() -> bool:
        state = _epoch_state(checkpoint)
        return state is not None and all(state.get(k) == v for k, v in kill_at.items())

    command = [sys.executable, "-c", LEARN, str(store.path), procedure, json.dumps(overrides)]
    kill_when([*command, str(checkpoint)], reached)
    assert checkpoint.is_file()
    starts: list[int] = []
    real_fit, real_sgd = basis.fit_masked, basis.sgd_epoch_mse

    def fit(*args: Any, **kwargs: Any) -> Any:
        starts.append(int(kwargs.get("first_epoch", 0)))
        return real_fit(*args, **kwargs)

    def sgd(*args: Any, **kwargs: Any) -> Any:
        starts.append(-1)
        return real_sgd(*args, **kwargs)

    monkeypatch.setattr(basis, "fit_masked", fit)
    monkeypatch.setattr(basis, "sgd_epoch_mse", sgd)
    resumed = basis.learn(store, settings, **quiet, checkpoint=checkpoint)
    if procedure == "paper":
        assert starts and starts[0] == kill_at["epoch"]  # took up the saved epoch
        assert len(starts) == settings.rounds + 1 - kill_at["round"]
    else:  # only the epochs after the saved one ran
        assert len(starts) == settings.epochs - kill_at["epoch"]
    assert not checkpoint.exists()
    np.testing.assert_array_equal(resumed.weight, uninterrupted.weight)
    np.testing.assert_array_equal(resumed.bias, uninterrupted.bias)
    np.testing.assert_array_equal(resumed.ap, uninterrupted.ap)
    assert resumed.meta["concepts"] == uninterrupted.meta["concepts"]
