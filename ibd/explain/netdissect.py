"""Network Dissection's unit-wise explanation of one decision (paper 3.4, eq. 14).

The basis is the unit vectors e_u of the feature layer: unit u contributes w_ku a_u with
a = GAP(A), its heatmap is its activation map A_u, and its label is its dissection concept
(`tally.csv` of `ibd dissect`). For a network whose logits are not linear in GAP(A), the
contribution is first-order as for IBD's eq. 12 route: w_k(A)_u sum_ij A_uij with
w_k(A) = mean_ij dh_k/dA. The `top` units are listed, largest contribution first; the residual
is the logit less their contributions, so sum(contributions) + residual == logit.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ibd.dissect import UnitLabel, read_tally
from ibd.errors import UserError
from ibd.explain.cam import gradcam_weights
from ibd.explain.loop import Explainer, Part, Split, feature_probe
from ibd.nets.hooks import Forward
from ibd.nets.load import LoadedModel, final_linear


class NetDissect(Explainer):
    """Units ranked by w_ku a_u (eq. 14), each with its activation map and dissection label.

    `tally`: a `tally.csv` path, or its rows (`ibd.dissect.read_tally`), labelling every unit
    of this model's feature layer. `top`: units kept per image."""

    method = "netdissect"

    def __init__(
        self, model: LoadedModel, tally: str | Path | Sequence[UnitLabel], *, top: int = 7
    ) -> None:
        super().__init__(model)
        if top < 1:
            raise UserError(f"top must be at least 1, got {top}")
        where = str(tally) if isinstance(tally, (str, Path)) else "the tally"
        rows = read_tally(tally) if isinstance(tally, (str, Path)) else tally
        self.units = {u.unit: u for u in rows}
        self.top = top
        channels, is_gap = feature_probe(model)
        if missing := sorted(set(range(channels)) - set(self.units)):
            raise UserError(
                f"{where} labels {len(self.units)} units but layer '{model.layer}' has units "
                f"1..{channels} (NetDissect numbering) and unit {missing[0] + 1} is not in it: "
                "was it dissected on another model or layer?"
            )
        if extra := sorted(set(self.units) - set(range(channels))):
            raise UserError(
                f"{where} labels unit {extra[0] + 1} but layer '{model.layer}' has only "
                f"{channels}: was it dissected on another model or layer?"
            )
        self.weight = final_linear(model.model)[0] if is_gap else None
        self.needs_gradients = not is_gap

    def split(self, fwd: Forward) -> list[Split]:
        if self.weight is not None:
            rows, activation = self.weight.to(fwd.features)[fwd.targets], fwd.features.mean((2, 3))
        else:  # first-order, as for IBD's eq. 12 route (module docstring)
            assert fwd.gradients is not None
            rows, activation = gradcam_weights(fwd.gradients), fwd.features.sum((2, 3))
        contributions = rows * activation
        out = []
        for n, k in enumerate(fwd.targets.tolist()):
            order = torch.argsort(contributions[n], descending=True)[: self.top].tolist()
            parts = [self._part(u, float(contributions[n, u]), fwd.features[n, u]) for u in order]
            score = float(fwd.logits[n, k])
            out.append((parts, score - sum(p.contribution for p in parts)))
        return out

    def _part(self, u: int, contribution: float, heatmap: torch.Tensor) -> Part:
        unit = self.units[u]
        extra: dict[str, float | int | str] = {
            "unit": u,
            "iou": unit.iou,
            "category": unit.category,
        }
        return Part(unit.label, contribution, heatmap, extra)
