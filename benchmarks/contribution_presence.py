"""Does a concept's IBD contribution tell whether the concept is in the image? (concept world)

For the demo's reference model, basis and decomposition: within the feature store's held-out
images that the model assigns to class k, take each concept c of k's decomposition that at least
`--min-images` of them show and at least as many do not. Two scores of each image are compared
with the world's truth (c's full-resolution mask is non-empty):

- c's contribution s_c q_c . a to the logit (paper eq. 9, a = the pooled feature vector), what an
  explanation ranks its concepts by;
- the peak of c's heatmap, max_ij q_c . a(i, j) (the map of paper 2.3 before upsampling).

Each row gives the AUC with which the score separates the images that show c from those that do
not (0.5: no information; 1: perfect), and whether c counts as right for k in `ibd evaluate`
(a defining concept or one of its parts). Presence within a class is what an explanation of one
image adds beyond the class itself, so a low AUC for the contribution means the concept's share
of the logit comes from the scene around it, not from the concept.

    .venv/bin/python benchmarks/contribution_presence.py [--min-images 10]

Needs `make demo`'s reference model, world, feature store, basis and decomposition in $IBD_HOME
(default ./ibd-data); about 10 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
from scipy.stats import mannwhitneyu

from ibd import paths
from ibd.basis import HELD_OUT_SPLIT, Basis
from ibd.data.broden import BrodenDataset
from ibd.data.features import FeatureStore
from ibd.decomposition import Decomposition
from ibd.evaluation.scoring import lenient_correct, read_world
from ibd.nets.load import final_linear, load_model


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for the boolean labels `positive`: the Mann-Whitney
    U of the positives against the negatives over n+ n- (ties count half)."""
    u = mannwhitneyu(scores[positive], scores[~positive]).statistic
    return float(u / (positive.sum() * (~positive).sum()))


def presence(store: FeatureStore, images: np.ndarray, names: list[str]) -> np.ndarray:
    """bool len(images) x len(names): whether each image's full-resolution world masks show each
    concept."""
    world = BrodenDataset(paths.world_dir())
    index = {Path(world.image_path(i)).name: i for i in range(len(world))}
    column = {c.name: j for j, c in enumerate(world.concepts)}
    rows = []
    for image in images:
        shown = world.load_mask(index[Path(store.paths[image]).name]).flatten(1).any(1).numpy()
        rows.append([bool(shown[column[name]]) for name in names])
    return np.array(rows, dtype=bool)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--min-images",
        type=int,
        default=10,
        help="least number of images with and without the concept (default 10)",
    )
    args = parser.parse_args()
    needed = [
        paths.model_path(),
        paths.features_dir() / "header.json",
        paths.basis_path(),
        paths.decompose_path(),
    ]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        print(f"needs `make demo` first: missing {', '.join(missing)}")
        return 1
    store = FeatureStore(paths.features_dir())
    world = read_world(paths.world_dir() / "world.json")
    loaded = load_model(None, paths.model_path())
    w_t, b_t = final_linear(loaded.model)
    w, b = w_t.numpy().astype(np.float64), b_t.numpy().astype(np.float64)
    basis = Basis.load(paths.basis_path())
    q, names = basis.q.astype(np.float64), basis.names
    dec = Decomposition.load(paths.decompose_path())
    dec.check_fits(w, loaded.classes, q, names)
    terms = [dec.terms(k) for k in range(len(loaded.classes))]

    images = store.images_in(HELD_OUT_SPLIT)
    maps = np.stack([store.features[i].reshape(-1, store.dim) for i in images]).astype(np.float64)
    pooled = maps.mean(1)
    assigned = np.argmax(pooled @ w.T + b, axis=1)
    shown = presence(store, images, names)

    print(
        f"{'class':<14} {'concept':<14} {'right':>5} {'top 3':>5} {'with':>5} {'without':>7}"
        "  AUC contribution  AUC heatmap peak"
    )
    rows = []
    for k, cls in enumerate(world.classes):
        mine = assigned == k
        right = lenient_correct(cls.defining, world.parts)
        contributions = {c: s * pooled[mine] @ q[c] for c, s in terms[k]}
        top = sorted(contributions, key=lambda c: -contributions[c].mean())[:3]
        for c, _ in terms[k]:
            present = shown[mine, c]
            if min(present.sum(), (~present).sum()) < args.min_images:
                continue
            peak = (maps[mine] @ q[c]).max(1)
            row = (auc(contributions[c], present), auc(peak, present), names[c] in right, c in top)
            rows.append(row)
            print(
                f"{cls.name:<14} {names[c]:<14} {'yes' if row[2] else 'no':>5} "
                f"{'yes' if row[3] else '':>5} {int(present.sum()):>5} {int((~present).sum()):>7}"
                f"  {row[0]:16.2f}  {row[1]:16.2f}"
            )
    if not rows:
        print(f"no (class, concept) pair with {args.min_images} images each way")
        return 0
    groups = {
        "every pair": rows,
        "in a top 3, counted wrong": [r for r in rows if r[3] and not r[2]],
        "in a top 3, counted right": [r for r in rows if r[3] and r[2]],
    }
    for label, group in groups.items():
        if group:
            print(
                f"{label}: {len(group)} pairs, median AUC contribution "
                f"{statistics.median(r[0] for r in group):.2f}, heatmap peak "
                f"{statistics.median(r[1] for r in group):.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
