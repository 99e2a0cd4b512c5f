"""Concept-level explanations of one decision: IBD (paper 2.3) and Network Dissection's
unit-wise explanation (paper 3.4, eq. 14).

IBD. With the class decomposition w_k = sum_i s_i q_i + r_k (eq. 3-6) and a = GAP(A), the logit is

    h_k(a) = w_k . a + b_k = sum_i s_i (q_i . a) + (r_k . a + b_k)

so concept i contributes s_i q_i.a, the residual is r_k.a + b_k, and the concept's heatmap is its
classifier response q_i^T A (H x W; its spatial mean times s_i is the contribution). Components
are ranked by contribution, largest first.
For a network whose logits are not linear in GAP(A) (AlexNet, VGG with fc layers), the paper's
Grad-CAM variant (eq. 12) decomposes, per image, the pooled gradient w_k(A) = mean_ij dh_k/dA
into concepts, w_k(A) = sum_i s_i q_i + r. The Grad-CAM map w_k(A)^T A sums over positions to the
first-order estimate of the logit, sum_ij w_k(A) . A_ij = HW w_k(A) . GAP(A), so concept i
contributes s_i q_i . sum_ij A_ij (its heatmap q_i^T A summed, times s_i). On a GAP network
w_k(A) = w_k / HW and these are exactly the contributions above. The residual is whatever remains
of the logit, h_k - sum_i contributions (it also holds the head's nonlinearity).

Network Dissection. The basis is the unit vectors e_u: unit u contributes w_ku a_u (for non-GAP
heads, w_k(A)_u sum_ij A_uij, as above), its heatmap is its activation map A_u, and its label is its
dissection concept (`tally.csv`). The top units are listed; the residual is the logit minus their
contributions.

In both, sum(contributions) + residual == logit.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from ibd import paths
from ibd.decompose import decompose
from ibd.errors import UserError
from ibd.explain import cam as cam_lib
from ibd.explain.loop import Part, Splitter
from ibd.nets.hooks import Forward, run
from ibd.nets.load import LoadedModel, final_linear


def read_basis(path: Path) -> tuple[np.ndarray, list[str]]:
    """(q, names) of a basis.npz (docs/contracts.md 5)."""
    from ibd.commands.decompose import read_basis as read

    q, names, _ = read(path)
    return q, names


def read_class_terms(
    path: Path, names: list[str], q: np.ndarray, loaded: LoadedModel
) -> list[list[tuple[int, float]]]:
    """Per class of `loaded`, the (basis index, coefficient) pairs of a decompose.json
    (contracts.md 6). The file must be a decomposition of this model's class weights over this
    basis: same class names, same concepts, and each class's stored residual fraction must be
    what its terms leave of the model's w_k (a file from before a retraining fails that)."""
    classes = loaded.classes
    try:
        document = json.loads(path.read_text())
        parsed = {
            int(entry["index"]): (
                entry.get("name"),  # optional: checked when given
                [
                    (int(c["index"]), float(c["coefficient"]), str(c["name"]))
                    for c in entry["concepts"]
                ],
                float(entry["residual_fraction"]),
            )
            for entry in document["classes"]
        }
    except FileNotFoundError:
        raise UserError(f"decomposition not found: {path} (run `ibd decompose`)") from None
    except OSError as exc:
        raise UserError(f"cannot read decomposition {path}: {exc.strerror}") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"{path} is not a decompose.json: {type(exc).__name__} {exc}") from None
    if len(parsed) != len(classes):
        raise UserError(
            f"{path} decomposes {len(parsed)} classes but {loaded.name} has {len(classes)}: "
            "was it made from another model?"
        )
    weight, _ = final_linear(loaded.model)
    w = weight.double().cpu().numpy()
    result: list[list[tuple[int, float]]] = []
    for k, class_name in enumerate(classes):
        if k not in parsed:
            raise UserError(f"{path} has no class {k} ({class_name}) of this model")
        name, terms, stored = parsed[k]
        if name is not None and name != class_name:
            raise UserError(
                f"{path}: class {k} is {name!r} but {loaded.name}'s class {k} is "
                f"{class_name!r}: was it made from another model?"
            )
        for c, _, concept in terms:
            if not 0 <= c < len(names) or names[c] != concept:
                raise UserError(
                    f"{path}: concept {concept!r} is not index {c} of the basis; "
                    "was it made with another basis?"
                )
        pairs = [(c, s) for c, s, _ in terms]
        if not all(np.isfinite(s) for _, s in pairs) or not np.isfinite(stored):
            raise UserError(f"{path}: class {class_name!r} has a NaN or infinite number")
        residual = w[k] - sum((s * q[c] for c, s in pairs), np.zeros(w.shape[1]))
        norm = float(w[k] @ w[k])
        fraction = float(residual @ residual) / norm if norm > 0 else 0.0
        if abs(fraction - stored) > 1e-4:
            raise UserError(
                f"{path}: class {class_name!r} leaves {fraction:.4f} of {loaded.name}'s class "
                f"weight unexplained, but the file says {stored:.4f}: it decomposes other "
                "weights or another basis (another model, or either one before retraining); "
                "rerun `ibd decompose`"
            )
        result.append(pairs)
    return result


def feature_probe(loaded: LoadedModel) -> tuple[int, bool]:
    """The feature layer's channel count D, and whether the model's logits are W GAP(A) + b
    (checked numerically on one random input). A head without an `nn.Linear` (SqueezeNet's
    1x1-convolution classifier) is not: its explanations take the gradient route (eq. 12)."""
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(1, 3, *loaded.input_size, generator=generator).to(loaded.device)
    with torch.no_grad():
        fwd = run(loaded.model, loaded.layer, probe)
    try:
        weight, bias = final_linear(loaded.model)
    except UserError:
        return fwd.features.shape[1], False
    return fwd.features.shape[1], cam_lib.is_gap_linear(fwd.features, fwd.logits, weight, bias)


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
    explicit_decomposition: bool = False,
    fallback: bool = False,
) -> tuple[Splitter, bool]:
    """The IBD splitter and whether it needs gradients (the eq. 12 variant). Decompositions made
    here (no file, or per image) keep max(7, top) concepts, the `ibd decompose` default.
    `fallback`: `decomposition` is only the default file, not asked for, and the basis was given
    explicitly: when the file is not a decomposition of this model over this basis, say so on
    stderr and decompose the class weights here instead of refusing."""
    q_np, names = read_basis(basis)
    channels, is_gap = feature_probe(loaded)
    if q_np.shape[1] != channels:
        raise UserError(
            f"basis {basis} has D={q_np.shape[1]} but {loaded.name}'s layer '{loaded.layer}' "
            f"has {channels} channels: was it learned on another model or layer?"
        )
    q = torch.as_tensor(q_np, dtype=torch.float32, device=loaded.device)
    max_concepts = max(7, top)
    if gradient or not is_gap:
        if explicit_decomposition:
            raise UserError(
                "--decomposition holds the class weights' decompositions, but this explanation "
                "decomposes each image's pooled gradient (paper eq. 12): drop --decomposition"
                + ("" if gradient else f" ({loaded.name} has no GAP -> linear head)")
            )

        def split_gradient(fwd: Forward) -> list[tuple[list[Part], float | None]]:
            assert fwd.gradients is not None
            pooled_grad = cam_lib.gradcam_weights(fwd.gradients).double().cpu().numpy()
            dec = decompose(q_np, pooled_grad, max_concepts=max_concepts)
            summed = fwd.features.sum(dim=(2, 3))
            out = []
            for n, k in enumerate(fwd.targets.tolist()):
                score = float(fwd.logits[n, k])
                parts, residual = concept_parts(
                    q, names, dec.terms(n), fwd.features[n], summed[n], score, top
                )
                out.append((parts, residual))
            return out

        return split_gradient, True

    class_terms = None
    if decomposition is not None:
        try:
            class_terms = read_class_terms(decomposition, names, q_np, loaded)
        except UserError:
            if not fallback:
                raise
            print(
                f"note: {decomposition} is not a decomposition of {loaded.name}'s class weights "
                f"over {basis}; decomposing them here (pass --decomposition to use a file)",
                file=sys.stderr,
            )
    if class_terms is None:
        weight, _ = final_linear(loaded.model)
        dec = decompose(q_np, weight.double().cpu().numpy(), max_concepts=max_concepts)
        class_terms = [dec.terms(k) for k in range(weight.shape[0])]

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
    channels, is_gap = feature_probe(loaded)
    if missing := sorted(set(range(channels)) - set(units)):
        raise UserError(
            f"{tally} labels {len(units)} units but layer '{loaded.layer}' has units "
            f"1..{channels} (NetDissect numbering) and unit {missing[0] + 1} is not in it: "
            "was it dissected on another model or layer?"
        )
    if extra := sorted(set(units) - set(range(channels))):
        raise UserError(
            f"{tally} labels unit {extra[0] + 1} but layer '{loaded.layer}' has only {channels}: "
            "was it dissected on another model or layer?"
        )
    weight = final_linear(loaded.model)[0] if is_gap else None

    def split(fwd: Forward) -> list[tuple[list[Part], float | None]]:
        if weight is not None:
            rows, activation = weight.to(fwd.features)[fwd.targets], fwd.features.mean((2, 3))
        else:  # first-order, as for IBD's eq. 12 variant (module docstring)
            assert fwd.gradients is not None
            rows, activation = cam_lib.gradcam_weights(fwd.gradients), fwd.features.sum((2, 3))
        contributions = rows * activation
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

    return split, not is_gap


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
            explicit_decomposition=bool(args.decomposition),
            fallback=bool(args.basis) and not args.decomposition,
        )
    if method == "netdissect":
        tally = Path(args.tally) if args.tally else paths.dissect_dir(loaded.name) / "tally.csv"
        if not tally.exists():
            raise UserError(f"dissection not found: {tally} (run `ibd dissect` or pass --tally)")
        return netdissect_splitter(loaded, tally, top=args.top)
    raise UserError(f"unknown method {method}")
