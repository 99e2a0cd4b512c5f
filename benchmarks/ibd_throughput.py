"""Explanation throughput of the full IBD path against a plain forward pass (issue 8).

resnet18 (random weights), 224 px, batch 16, CPU; a 660-concept basis (D = 512) and a
365-class decomposition with 7 concepts per class, the paper's sizes. The IBD path is what
`ibd explain --method ibd` runs per batch: the forward pass with `layer4` captured, the
contributions s_i q_i.a of the class's concepts, and the heatmaps q_i^T A of the top four.
Variants are timed interleaved, round by round, in one process; the median is reported.
Target: IBD within 1.15x of the plain forward.

    .venv/bin/python benchmarks/ibd_throughput.py [--rounds 9] [--batch 16]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
import torchvision

from ibd.decomposition import solve
from ibd.explain.basis_decomposition import concept_parts
from ibd.nets import hooks


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--json", action="store_true", help="print one JSON line only")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = torchvision.models.resnet18(num_classes=365).eval()
    x = torch.randn(args.batch, 3, 224, 224)
    raw = rng.standard_normal((660, 512))
    raw -= raw.mean(axis=1, keepdims=True)
    q_np = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    dec = solve(q_np, model.fc.weight.detach().double().numpy())
    terms = [dec.terms(k) for k in range(365)]
    q = torch.as_tensor(q_np, dtype=torch.float32)
    names = [f"concept{c}" for c in range(660)]

    def forward() -> torch.Tensor:
        with torch.no_grad():
            return model(x)

    def ibd() -> list:
        with torch.no_grad():
            fwd = hooks.run(model, "layer4", x)
            pooled = fwd.features.mean(dim=(2, 3))
            out = []
            for n, k in enumerate(fwd.targets.tolist()):
                score = float(fwd.logits[n, k])
                out.append(
                    concept_parts(q, names, terms[k], fwd.features[n], pooled[n], score, top=4)
                )
            return out

    variants = {"forward": forward, "ibd": ibd}
    for fn in variants.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(ts) for name, ts in times.items()}
    result = {
        "ibd_over_forward": median["ibd"] / median["forward"],
        "forward_s": median["forward"],
        "ibd_s": median["ibd"],
        "images_per_s": args.batch / median["ibd"],
    }
    if args.json:
        print(json.dumps(result))
        return result
    print(f"resnet18, 224 px, batch {args.batch}, CPU, 660 concepts, median of {args.rounds}")
    print(
        f"forward {median['forward']:.3f} s/batch; IBD explanation {median['ibd']:.3f} s/batch "
        f"({result['images_per_s']:.1f} images/s)"
    )
    print(f"IBD / forward = {result['ibd_over_forward']:.3f} (target <= 1.15)")
    return result


if __name__ == "__main__":
    main()
