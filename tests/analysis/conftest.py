"""Writes small studies in the real formats: hitgen manifests (contracts.md section 7) and the
hitserver ratings export (section 8)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

COLUMNS = [
    "batch", "item_id", "worker_id", "platform", "assignment_id", "platform_assignment_id",
    "choice", "reason", "accepted_at", "submitted_at", "duration_s", "status", "simulated",
]  # fmt: skip


def item(
    item_id: str,
    robot_a: str = "first",
    first: tuple[str, str] = ("world_resnet", "ibd"),
    second: tuple[str, str] = ("world_resnet", "cam"),
    kind: str = "method-vs-method",
    expected: list[int] | None = None,
) -> dict[str, Any]:
    """One manifest item; `expected` makes it a catch item."""
    catch = {"type": "identical", "expected_choices": expected} if expected else None
    side = {"class_name": "harbor", "concepts": ["boat", "water"], "masks": []}
    return {
        "id": item_id,
        "kind": "catch" if expected else kind,
        "image": f"images/{item_id}.png",
        "source_image": f"world/images/{item_id}.png",
        "class_index": 0,
        "class_name": "harbor",
        "first": {"model": first[0], "method": first[1], **side},
        "second": {"model": second[0], "method": second[1], **side},
        "robot_a": robot_a,
        "catch": catch,
        "page": f"pages/{item_id}.html",
    }


@dataclass
class Files:
    root: Path

    def manifest(self, batch: str, experiment: str, items: list[dict[str, Any]]) -> Path:
        path = self.root / "batches" / batch / "manifest.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "format": "hitgen-manifest-1",
            "batch": batch,
            "experiment": experiment,
            "focus": {"method": "ibd", "model": "world_resnet"},
            "seed": 0,
            "version": "0.1.0",
            "created_with": "test",
            "skipped": [],
            "items": items,
        }
        path.write_text(json.dumps(data, indent=1))
        return path

    def ratings(
        self,
        rows: Iterable[tuple[str, str, str, int]],
        name: str = "export.csv",
        simulated: bool = False,
        status: str = "submitted",
    ) -> Path:
        """rows: (batch, item_id, worker_id, choice)."""
        path = self.root / name
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            writer.writeheader()
            for n, (batch, item_id, worker, choice) in enumerate(rows):
                writer.writerow(rating_row(batch, item_id, worker, choice, n, simulated, status))
        return path


def rating_row(
    batch: str,
    item_id: str,
    worker: str,
    choice: int,
    n: int,
    simulated: bool = False,
    status: str = "submitted",
) -> dict[str, Any]:
    return {
        "batch": batch,
        "item_id": item_id,
        "worker_id": worker,
        "platform": "simulated" if simulated else "local",
        "assignment_id": f"as-{n}",
        "platform_assignment_id": "",
        "choice": choice,
        "reason": "because, with a comma",
        "accepted_at": "2024-05-01T10:00:00Z",
        "submitted_at": "2024-05-01T10:00:42Z",
        "duration_s": 42.0,
        "status": status,
        "simulated": int(simulated),
    }


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return Files(tmp_path)


@pytest.fixture
def make_item() -> Callable[..., dict[str, Any]]:
    return item


@pytest.fixture
def make_row() -> Callable[..., dict[str, Any]]:
    return rating_row
