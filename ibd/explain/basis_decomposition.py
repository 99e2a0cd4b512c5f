"""IBD: an image's class score split into concept contributions (paper 2.3, eq. 9-12).

With the class decomposition w_k = sum_i s_i q_i + r_k (eq. 3-6, `ibd.decompose`) and
a = GAP(A), the logit is (eq. 9-11)

    h_k(a) = w_k . a + b_k = sum_i s_i (q_i . a) + (r_k . a + b_k)

so concept i contributes s_i q_i.a, the residual is r_k.a + b_k, and the concept's heatmap is its
classifier response q_i^T A (H x W; its spatial mean times s_i is the contribution). Components
are ranked by contribution, largest first, and the top `top` are kept; the residual is the logit
less the kept contributions, so sum(contributions) + residual == logit.

For a network whose logits are not linear in GAP(A) (AlexNet, VGG with fc layers, SqueezeNet's
convolutional head), the paper's Grad-CAM variant (eq. 12) decomposes, per image, the pooled
gradient w_k(A) = mean_ij dh_k/dA into concepts, w_k(A) = sum_i s_i q_i + r. The Grad-CAM map
w_k(A)^T A sums over positions to the first-order estimate of the logit,
sum_ij w_k(A) . A_ij = HW w_k(A) . GAP(A), so concept i contributes s_i q_i . sum_ij A_ij (its
heatmap q_i^T A summed, times s_i). On a GAP network w_k(A) = w_k / HW and these are exactly the
contributions above. The residual is whatever remains of the logit (it also holds the head's
nonlinearity).

With a null (`ibd.significance.NullBasis`, `ibd decompose --significance`), each shown
component also gets a Monte-Carlo p-value: its unique contribution u_i = s_i (q_i' . a) (q_i'
the part of q_i the class's other concepts do not span) against what random directions put in
its place get, Holm-corrected over the image's shown components (`ibd.significance`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ibd.basis import Basis
from ibd.decomposition import Decomposition, solve
from ibd.errors import UserError
from ibd.explain.cam import gradcam_weights
from ibd.explain.loop import Explainer, Part, Split, feature_probe
from ibd.nets.hooks import Forward
from ibd.nets.load import LoadedModel, final_linear
from ibd.significance import ALPHA, NullBasis, Tests, image_tester

# (shown positions among the class's terms) -> their tests, for one image
Tester = Callable[[list[int]], Tests]


class IBD(Explainer):
    """Interpretable Basis Decomposition of each image's class score (module docstring).

    `basis`: an `ibd.Basis` or a `basis.npz` path, learned on this model's feature layer.
    `decomposition`: the class weights' decomposition over that basis (an `ibd.Decomposition`
    or a `decompose.json` path), checked to be of this model's weights over this basis; None
    decomposes the class weights here (nnls, max(7, top) concepts, as `ibd decompose`).
    `top`: components kept per image. `gradient=True` takes the eq. 12 route even on a GAP
    network (where it equals eq. 9); a network without a GAP -> linear head always takes it,
    and then no class decomposition applies. `null`: random directions drawn for this basis
    (an `ibd.significance.NullBasis` or its `.null.npz` path); with it each shown component
    gets `p_value`, `p_error`, `p_adjusted` (Holm over the image's components) and
    `significant` (p_adjusted <= `alpha`) in its record."""

    method = "ibd"

    def __init__(
        self,
        model: LoadedModel,
        basis: Basis | str | Path,
        decomposition: Decomposition | str | Path | None = None,
        *,
        top: int = 7,
        gradient: bool = False,
        null: NullBasis | str | Path | None = None,
        alpha: float = ALPHA,
    ) -> None:
        super().__init__(model)
        if top < 1:
            raise UserError(f"top must be at least 1, got {top}")
        where = f"basis {basis}" if isinstance(basis, (str, Path)) else "the basis"
        self.basis = basis if isinstance(basis, Basis) else Basis.load(basis)
        self.top = top
        self.max_concepts = max(7, top)
        self.q_np = self.basis.q.astype(np.float64)
        channels, is_gap = feature_probe(model)
        if self.q_np.shape[1] != channels:
            raise UserError(
                f"{where} has D={self.q_np.shape[1]} but {model.name}'s layer '{model.layer}' "
                f"has {channels} channels: was it learned on another model or layer?"
            )
        self.q = torch.as_tensor(self.q_np, dtype=torch.float32, device=model.device)
        self.names = list(self.basis.names)
        self.needs_gradients = gradient or not is_gap
        self.class_terms: list[list[tuple[int, float]]] = []
        if self.needs_gradients and decomposition is not None:
            head = "" if gradient else f" ({model.name} has no GAP -> linear head)"
            raise UserError(
                "a decomposition of the class weights was given, but this explanation "
                f"decomposes each image's pooled gradient (paper eq. 12): drop it{head}"
            )
        if not self.needs_gradients:
            self.class_terms = self._class_terms(decomposition)
        self.tester = None
        if null is not None:
            if not 0 < alpha < 1:
                raise UserError(f"alpha must lie in (0, 1), got {alpha}")
            loaded = null if isinstance(null, NullBasis) else NullBasis.load(null)
            where = f"null {null}" if isinstance(null, (str, Path)) else "the null"
            loaded.check_fits(self.q_np, where)
            self.tester = image_tester(self.q_np, loaded, alpha)

    def _class_terms(
        self, decomposition: Decomposition | str | Path | None
    ) -> list[list[tuple[int, float]]]:
        weight = final_linear(self.model.model)[0].double().cpu().numpy()
        self.class_weight = weight
        if decomposition is None:
            dec = solve(self.q_np, weight, max_concepts=self.max_concepts)
        else:
            if not isinstance(decomposition, Decomposition):
                decomposition = Decomposition.load(decomposition)
            decomposition.check_fits(weight, self.model.classes, self.q_np, self.names)
            dec = decomposition
        return [dec.terms(k) for k in range(weight.shape[0])]

    def split(self, fwd: Forward) -> list[Split]:
        if self.needs_gradients:
            return self._split_gradient(fwd)
        pooled = fwd.features.mean(dim=(2, 3))
        return [
            concept_parts(
                self.q,
                self.names,
                self.class_terms[k],
                fwd.features[n],
                pooled[n],
                float(fwd.logits[n, k]),
                self.top,
                self._tester(self.class_weight[k], pooled[n], self.class_terms[k]),
            )
            for n, k in enumerate(fwd.targets.tolist())
        ]

    def _tester(
        self, w: np.ndarray, a: torch.Tensor, terms: list[tuple[int, float]]
    ) -> Tester | None:
        """The significance test of one image's shown components (None without a null)."""
        if self.tester is None:
            return None
        test, concepts = self.tester, [c for c, _ in terms]
        pooled = a.detach().double().cpu().numpy()
        return lambda shown: test(w, pooled, concepts, shown)

    def _split_gradient(self, fwd: Forward) -> list[Split]:
        """Eq. 12: each image's pooled gradient decomposed over the basis."""
        assert fwd.gradients is not None
        pooled_grad = gradcam_weights(fwd.gradients).double().cpu().numpy()
        dec = solve(self.q_np, pooled_grad, max_concepts=self.max_concepts)
        summed = fwd.features.sum(dim=(2, 3))
        return [
            concept_parts(
                self.q,
                self.names,
                dec.terms(n),
                fwd.features[n],
                summed[n],
                float(fwd.logits[n, k]),
                self.top,
                self._tester(pooled_grad[n], summed[n], dec.terms(n)),
            )
            for n, k in enumerate(fwd.targets.tolist())
        ]


def concept_parts(
    q: torch.Tensor,
    names: list[str],
    terms: list[tuple[int, float]],
    features: torch.Tensor,
    pooled: torch.Tensor,
    score: float,
    top: int,
    tester: Tester | None = None,
) -> tuple[list[Part], float]:
    """One image's concept components s_i q_i . pooled with heatmaps q_i^T A (D x H x W
    `features`), the `top` largest, and the residual: `score` less their sum. With `tester`,
    the shown components' significance fields go into their `extra`."""
    parts = [
        Part(names[c], float(s * (q[c] @ pooled)), torch.einsum("d,dhw->hw", q[c], features))
        for c, s in terms
    ]
    order = sorted(range(len(parts)), key=lambda i: parts[i].contribution, reverse=True)[:top]
    shown = [parts[i] for i in order]
    if tester is not None and order:
        tests = tester(order)
        for j, part in enumerate(shown):
            part.extra = {**(part.extra or {}), **tests.record(j)}
    return shown, score - sum(p.contribution for p in shown)
