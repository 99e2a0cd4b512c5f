"""Explain one concept-world image with IBD, CAM, Grad-CAM and Network Dissection from Python.

    python examples/quickstart.py OUT [--home DIR] [--images N] [--epochs N]

`--home` is an IBD home holding the concept world, its reference model, basis and dissection
(what `make demo` leaves in ./ibd-data). When it lacks any of them, a small world is built there
first with the project's own commands (`--images` scenes, the reference model trained for
`--epochs`: a few minutes on a laptop CPU; default home: OUT/home).
The explanations' pictures (paper Fig. 1 / 4 style) are written to OUT/<method>.png, and a
top-20% mask version (the style of the paper's human study) to OUT/<method>-mask.png.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import ibd

MODEL = "world_resnet"
METHODS = ("ibd", "cam", "gradcam", "netdissect")


def ensure_world(home: Path, images: int, epochs: int) -> None:
    """Build a small concept world, its reference model, basis and dissection where missing."""
    from ibd.cli import main

    os.environ["IBD_HOME"] = str(home)
    steps = [
        (home / "world" / "scenes.csv", ["world", "build", "--images", str(images), "--seed", "1"]),
        (home / "models" / f"{MODEL}.pt", ["train", "--arch", MODEL, "--epochs", str(epochs)]),
        (home / "basis" / f"{MODEL}.npz", ["basis", "learn", "--epochs", "2"]),
        (home / "dissect" / MODEL / "tally.csv", ["dissect"]),
    ]
    for made, argv in steps:
        if not made.exists():
            print(f"building {made.relative_to(home)}: ibd {' '.join(argv)}", flush=True)
            if main([*argv, "--quiet"] if argv[0] == "basis" else argv) != 0:
                raise SystemExit(f"ibd {' '.join(argv)} failed")


def first_explain_image(home: Path) -> Path:
    """The first image of the world's held-out `explain` split."""
    from ibd.data import scenes

    return next(s.path for s in scenes.read(home / "world") if s.split == "explain")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for the pictures")
    parser.add_argument("--home", type=Path, help="IBD home (default: OUT/home, built if needed)")
    parser.add_argument("--images", type=int, default=400, help="scenes of a world built here")
    parser.add_argument("--epochs", type=int, default=6, help="training of a model built here")
    args = parser.parse_args()
    home = (args.home or args.out / "home").resolve()
    ensure_world(home, args.images, args.epochs)
    args.out.mkdir(parents=True, exist_ok=True)

    # A model handle, the concept basis and the class decomposition (paper 2.1-2.2, eq. 3-6).
    model = ibd.load_model(home / "models" / f"{MODEL}.pt")
    basis = ibd.Basis.load(home / "basis" / f"{MODEL}.npz")
    decomposition = ibd.decompose(model, basis, max_concepts=7)

    # One explainer per method; each is called as explainer(images, targets=None).
    explainers = {
        "ibd": ibd.IBD(model, basis, decomposition),
        "cam": ibd.CAM(model),
        "gradcam": ibd.GradCAM(model),
        "netdissect": ibd.NetDissect(model, home / "dissect" / MODEL / "tally.csv"),
    }
    image = first_explain_image(home)
    print(f"{image.name}: {MODEL} with its {len(basis.names)}-concept basis")
    for method in METHODS:
        (explanation,) = explainers[method](image)  # the top-1 class
        terms = ", ".join(f"{c.label} {c.contribution:+.2f}" for c in explanation.components[:3])
        residual = "" if explanation.residual is None else f", residual {explanation.residual:+.2f}"
        print(
            f"{method:>10}: {explanation.class_name} (logit {explanation.score:.2f}) "
            f"= {terms}{residual}"
        )
        explanation.render().save(args.out / f"{method}.png")
        explanation.render(style="mask").save(args.out / f"{method}-mask.png")
    print(f"pictures -> {args.out}")


if __name__ == "__main__":
    main()
