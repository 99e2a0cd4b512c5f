"""Concept-level explanations of one decision: IBD (paper 2.3) and Network Dissection's
unit-wise explanation (paper 3.4, eq. 14).

IBD. With the class decomposition w_k = sum_i s_i q_i + r_k (eq. 3-6) and a = GAP(A), the logit is

    h_k(a) = w_k . a + b_k = sum_i s_i (q_i . a) + (r_k . a + b_k)

so concept i contributes s_i q_i.a, the residual is r_k.a + b_k, and the concept's heatmap is its
classifier response q_i^T A (H x W; its spatial mean times s_i is the contribution). Components
are ranked by contribution, largest first.
For a network whose logits are not linear in GAP(A) (AlexNet, VGG with fc layers), the paper's
Grad-CAM variant (eq. 12) decomposes, per image, the pooled gradient w_k(A) = mean_ij dh_k/dA into
concepts; contributions are s_i q_i.a as above and the residual is whatever remains of the logit,
h_k - sum_i s_i q_i.a (it then also holds the head's nonlinearity).

Network Dissection. The basis is the unit vectors e_u: unit u contributes w_ku a_u (with w_k the
classifier row, or the pooled gradient for non-GAP heads), its heatmap is its activation map A_u,
and its label is its dissection concept (`tally.csv`). The top units are listed; the residual is
the logit minus their contributions.

In both, sum(contributions) + residual == logit.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ibd import cam as cam_lib
from ibd import paths
from ibd.decompose import decompose
from ibd.errors import UserError
from ibd.explain import Part, Splitter
from ibd.hooks import Forward, run
from ibd.models import LoadedModel, final_linear


def read_basis(path: Path) -> tuple[np.ndarray, list[str]]:
    """(q, names) of a basis.npz (docs/contracts.md 5)."""
    from ibd.commands.decompose import read_basis as read

    q, names, _ = read(path)
    return q, names


def read_class_terms(
    path: Path, names: list[str], classes: list[str]
) -> list[list[tuple[int, float]]]:
    """Per class, the (basis index, coefficient) pairs of a decompose.json (contracts.md 6)."""
    try:
        document = json.loads(path.read_text())
        entries = {int(c["index"]): c for c in document["classes"]}
    except FileNotFoundError:
        raise UserError(f"decomposition not found: {path} (run `ibd decompose`)") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path} is not a decompose.json: {exc}") from None
    terms: list[list[tuple[int, float]]] = []
    for k in range(len(classes)):
        if k not in entries:
            raise UserError(f"{path} has no class {k} ({classes[k]}) of this model")
        pairs = []
        for concept in entries[k]["concepts"]:
            c = int(concept["index"])
            if c >= len(names) or names[c] != concept["name"]:
                raise UserError(
                    f"{path}: concept {concept['name']!r} is not index {c} of the basis; "
                    "was it made with another basis?"
                )
            pairs.append((c, float(concept["coefficient"])))
        terms.append(pairs)
    return terms


def gap_linear(loaded: LoadedModel) -> bool:
    """Whether the model's logits are W GAP(A) + b for its feature layer (checked numerically on
    one random input)."""
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(1, 3, *loaded.input_size, generator=generator).to(loaded.device)
    with torch.no_grad():
        fwd = run(loaded.model, loaded.layer, probe)
    weight, bias = final_linear(loaded.model)
    return cam_lib.is_gap_linear(fwd.features, fwd.logits, weight, bias)


def concept_parts(
    q: torch.Tensor,
    names: list[str],
    terms: list[tuple[int, float]],
    features: torch.Tensor,
    pooled: torch.Tensor,
    score: float,
    top: int,
) -> tuple[list[Part], float]:
    parts = [
        Part(names[c], float(s * (q[c] @ pooled)), torch.einsum("d,dhw->hw", q[c], features))
        for c, s in terms
    ]
    parts.sort(key=lambda p: p.contribution, reverse=True)
    parts = parts[:top]
    return parts, score - sum(p.contribution for p in parts)


def ibd_splitter(
    loaded: LoadedModel,
    basis: Path,
    decomposition: Path | None,
    *,
    top: int = 7,
    gradient: bool = False,
) -> tuple[Splitter, bool]:
    """The IBD splitter and whether it needs gradients (the eq. 12 variant)."""
    q_np, names = read_basis(basis)
    weight, _ = final_linear(loaded.model)
    if q_np.shape[1] != weight.shape[1]:
        raise UserError(
            f"basis {basis} has D={q_np.shape[1]} but {loaded.name}'s layer '{loaded.layer}' "
            f"feeds {weight.shape[1]} features: was it learned on another model or layer?"
        )
    q = torch.as_tensor(q_np, dtype=torch.float32, device=loaded.device)
    use_gradient = gradient or not gap_linear(loaded)
    if use_gradient:

        def split_gradient(fwd: Forward) -> list[tuple[list[Part], float | None]]:
            assert fwd.gradients is not None
            pooled_grad = cam_lib.gradcam_weights(fwd.gradients).double().cpu().numpy()
            dec = decompose(q_np, pooled_grad)
            pooled = fwd.features.mean(dim=(2, 3))
            out = []
            for n, k in enumerate(fwd.targets.tolist()):
                score = float(fwd.logits[n, k])
                parts, residual = concept_parts(
                    q, names, dec.terms(n), fwd.features[n], pooled[n], score, top
                )
                out.append((parts, residual))
            return out

        return split_gradient, True

    if decomposition is None:
        dec = decompose(q_np, weight.double().cpu().numpy())
        class_terms = [dec.terms(k) for k in range(weight.shape[0])]
    else:
        class_terms = read_class_terms(decomposition, names, loaded.classes)

    def split(fwd: Forward) -> list[tuple[list[Part], float | None]]:
        pooled = fwd.features.mean(dim=(2, 3))
        out = []
        for n, k in enumerate(fwd.targets.tolist()):
            score = float(fwd.logits[n, k])
            parts, residual = concept_parts(
                q, names, class_terms[k], fwd.features[n], pooled[n], score, top
            )
            out.append((parts, residual))
        return out

    return split, False


def netdissect_splitter(loaded: LoadedModel, tally: Path, *, top: int = 7) -> tuple[Splitter, bool]:
    """Units ranked by w_ku a_u, each with its activation map and dissection label (eq. 14)."""
    from ibd.dissect import read_tally

    units = {u.unit: u for u in read_tally(tally)}
    weight, _ = final_linear(loaded.model)
    use_gradient = not gap_linear(loaded)

    def split(fwd: Forward) -> list[tuple[list[Part], float | None]]:
        if fwd.features.shape[1] != len(units):
            raise UserError(
                f"{tally} labels {len(units)} units but layer '{loaded.layer}' has "
                f"{fwd.features.shape[1]}: was it dissected on another model or layer?"
            )
        pooled = fwd.features.mean(dim=(2, 3))
        if use_gradient:
            assert fwd.gradients is not None
            rows = cam_lib.gradcam_weights(fwd.gradients)
        else:
            rows = weight.to(pooled.dtype)[fwd.targets]
        contributions = rows * pooled
        out = []
        for n, k in enumerate(fwd.targets.tolist()):
            order = torch.argsort(contributions[n], descending=True)[:top].tolist()
            parts = [
                Part(
                    units[u].label,
                    float(contributions[n, u]),
                    fwd.features[n, u],
                    {"unit": u, "iou": units[u].iou, "category": units[u].category},
                )
                for u in order
            ]
            score = float(fwd.logits[n, k])
            out.append((parts, score - sum(p.contribution for p in parts)))
        return out

    return split, use_gradient


def splitter_for(
    method: str, loaded: LoadedModel, args: argparse.Namespace
) -> tuple[Splitter, bool]:
    """The splitter of `ibd explain --method ibd|netdissect`, from the command's flags."""
    if method == "ibd":
        basis = Path(args.basis) if args.basis else paths.basis_path(loaded.name)
        if not basis.exists():
            raise UserError(f"basis not found: {basis} (run `ibd basis learn` or pass --basis)")
        decomposition = (
            Path(args.decomposition) if args.decomposition else paths.decompose_path(loaded.name)
        )
        return ibd_splitter(
            loaded,
            basis,
            decomposition if (args.decomposition or decomposition.exists()) else None,
            top=args.top,
            gradient=args.gradient_decomposition,
        )
    if method == "netdissect":
        tally = Path(args.tally) if args.tally else paths.dissect_dir(loaded.name) / "tally.csv"
        if not tally.exists():
            raise UserError(f"dissection not found: {tally} (run `ibd dissect` or pass --tally)")
        return netdissect_splitter(loaded, tally, top=args.top)
    raise UserError(f"unknown method {method}")
