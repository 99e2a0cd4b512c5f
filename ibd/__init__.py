"""Interpretable Basis Decomposition (Zhou et al., ECCV 2018) and its baselines.

The Python API (each name is imported on first use, so `import ibd` and the `ibd` command stay
fast and torch is not imported until needed):

    model = ibd.load_model()                         # the concept world's reference model
    model = ibd.Model.wrap(net, layer="layer4", labels=[...])
    explanations = ibd.IBD(model, "basis.npz")(images, targets=None)
    ibd.CAM(model), ibd.GradCAM(model), ibd.NetDissect(model, "tally.csv")
    e = explanations[0]; e.to_dict(); e.render()
    basis = ibd.Basis.load("basis.npz"); dec = ibd.decompose(model, basis); dec.save("dec.json")

The package follows the paper's stages: `nets/` (architectures, checkpoints, feature hooks),
`data/` (Broden-format concept data, feature stores, images), `world/` (the procedural concept
world), `basis` (concept classifiers, paper 2.2), `decomposition` (eq. 3-6), `dissect` (Network
Dissection), `explain/` (one module per explanation method), `evaluation/`, and `commands/`
(the command line, a thin caller of the rest).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    "load_model": "ibd.nets.model",
    "Model": "ibd.nets.model",
    "CAM": "ibd.explain.cam",
    "GradCAM": "ibd.explain.cam",
    "IBD": "ibd.explain.basis_decomposition",
    "NetDissect": "ibd.explain.netdissect",
    "Explainer": "ibd.explain.loop",
    "Explanation": "ibd.explain.records",
    "Component": "ibd.explain.records",
    "Basis": "ibd.basis",
    "decompose": "ibd.decomposition",
    "Decomposition": "ibd.decomposition",
    "UserError": "ibd.errors",
}

__all__ = [
    "CAM",
    "IBD",
    "Basis",
    "Component",
    "Decomposition",
    "Explainer",
    "Explanation",
    "GradCAM",
    "Model",
    "NetDissect",
    "UserError",
    "__version__",
    "decompose",
    "load_model",
]

if TYPE_CHECKING:
    from ibd.basis import Basis
    from ibd.decomposition import Decomposition, decompose
    from ibd.errors import UserError
    from ibd.explain.basis_decomposition import IBD
    from ibd.explain.cam import CAM, GradCAM
    from ibd.explain.loop import Explainer
    from ibd.explain.netdissect import NetDissect
    from ibd.explain.records import Component, Explanation
    from ibd.nets.model import Model, load_model


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'ibd' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
