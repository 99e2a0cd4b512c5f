"""Make the example figures in docs/figures from SIMULATED answers (no person rated anything).

    .venv/bin/python docs/figures/make_examples.py [--keep DIR]

Writes batch manifests in the hitgen format and a ratings export in the hitserver format, every
rating flagged `simulated=1`, `platform=simulated`, then runs
`analysis plot --include-simulated` on them and copies Fig. 8 and Fig. 9 here as
fig8_example.png and fig9_example.png. The figures therefore say "SIMULATED" in their titles.

The simulated raters: each comparison has an assumed effect `mu` (how much better the first
explanation is, in latent units); each item draws d ~ N(mu, 0.5); each rating is
d + worker bias + N(0, 0.8), cut at +-0.4 and +-1.2 into the five answers. The effects are
invented to exercise the plots (they are not results): a range of effects, including none
(a model against its mirror image). Three careless raters answer at random and fail catch trials.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from analysis import cli

HERE = Path(__file__).resolve().parent
SEED = 7

# (network, other method, assumed effect) for Fig. 8; (method, other model, effect) for Fig. 9.
FIG8 = [
    ("world_resnet", "netdissect", 0.6),
    ("world_resnet", "cam", 0.45),
    ("world_resnet", "gradcam", 0.3),
    ("world_vgg", "netdissect", 0.5),
    ("world_vgg", "cam", 0.35),
    ("world_vgg", "gradcam", 0.2),
]
FIG9 = [
    ("ibd", "world_alexnet", 0.55),
    ("ibd", "world_vgg", 0.35),
    ("ibd", "world_resnet_mirror", 0.0),
    ("cam", "world_alexnet", 0.20),
    ("cam", "world_vgg", 0.10),
    ("cam", "world_resnet_mirror", 0.0),
]
N_ITEMS = 40
RATINGS_PER_ITEM = 5
N_WORKERS = 45
CARELESS = 3
CATCH_PER_BATCH = 4
COLUMNS = [
    "batch", "item_id", "worker_id", "platform", "assignment_id", "platform_assignment_id",
    "choice", "reason", "accepted_at", "submitted_at", "duration_s", "status", "simulated",
]  # fmt: skip


def _side(model: str, method: str) -> dict[str, object]:
    return {"model": model, "method": method, "class_name": "harbor", "concepts": [], "masks": []}


def _answer(latent: float) -> int:
    """Score s in -2..2 from a latent preference for `first`."""
    return int(np.digitize(latent, [-1.2, -0.4, 0.4, 1.2])) - 2


def build(root: Path) -> tuple[list[Path], Path]:
    """Write manifests and a simulated ratings export under `root`."""
    rng = np.random.default_rng(SEED)
    workers = [f"SIM{w:03d}" for w in range(N_WORKERS)]
    careless = set(workers[:CARELESS])
    bias = {w: rng.normal(0, 0.25) for w in workers}
    rows: list[dict[str, object]] = []
    manifests: list[Path] = []
    # (experiment, first model, first method, second model, second method, effect)
    specs = [("method-vs-method", net, "ibd", net, other, mu) for net, other, mu in FIG8]
    specs += [("model-vs-model", "world_resnet", m, other, m, mu) for m, other, mu in FIG9]
    for experiment, model1, m1, model2, m2, mu in specs:
        batch = f"{experiment[:5]}-{model1}-{m1}-vs-{model2}-{m2}".replace("_", "")
        items = []
        for i in range(N_ITEMS + CATCH_PER_BATCH):
            catch = i >= N_ITEMS
            robot_a = "first" if rng.random() < 0.5 else "second"
            item = {
                "id": f"{batch}-{i:04d}",
                "kind": "catch" if catch else experiment,
                "image": f"images/{i:04d}.png",
                "class_index": 0,
                "class_name": "harbor",
                "first": _side(model1, m1),
                "second": _side(model2, m2),
                "robot_a": robot_a,
                "catch": {"type": "identical", "expected_choices": [3]} if catch else None,
                "page": f"pages/{batch}-{i:04d}.html",
            }
            items.append(item)
            d = rng.normal(mu, 0.5)
            for w in rng.choice(workers, size=RATINGS_PER_ITEM, replace=False):
                if w in careless:
                    choice = int(rng.integers(1, 6))
                elif catch:
                    choice = 3 if rng.random() < 0.9 else int(rng.choice([2, 4]))
                else:
                    s = _answer(d + bias[w] + rng.normal(0, 0.8))
                    choice = 3 - s if robot_a == "first" else 3 + s
                rows.append(
                    {
                        "batch": batch,
                        "item_id": item["id"],
                        "worker_id": w,
                        "platform": "simulated",
                        "assignment_id": f"a-{len(rows)}",
                        "platform_assignment_id": "",
                        "choice": choice,
                        "reason": "simulated rater",
                        "accepted_at": "2024-01-01T00:00:00Z",
                        "submitted_at": "2024-01-01T00:00:30Z",
                        "duration_s": 30.0,
                        "status": "submitted",
                        "simulated": 1,
                    }
                )
        manifest = {
            "format": "hitgen-manifest-1",
            "batch": batch,
            "experiment": experiment,
            "focus": {"method": m1, "model": model1},
            "seed": SEED,
            "version": "simulated-example",
            "created_with": "docs/figures/make_examples.py (simulated)",
            "skipped": [],
            "items": items,
        }
        path = root / "batches" / batch / "manifest.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(manifest, indent=1))
        manifests.append(path)
    export = root / "ratings.csv"
    with export.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return manifests, export


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="also keep the inputs and outputs here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        _, export = build(root)
        rc = cli.main(
            [
                "plot",
                "--responses", str(export),
                "--manifest", str(root / "batches"),
                "--include-simulated",
                "--out", str(root / "figures"),
            ]
        )  # fmt: skip
        if rc:
            return rc
        for stem in ("fig8", "fig9"):
            shutil.copyfile(root / "figures" / f"{stem}.png", HERE / f"{stem}_example.png")
            print(f"wrote {HERE / f'{stem}_example.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
