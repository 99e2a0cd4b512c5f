"""CAM and Grad-CAM: the paper's single-heatmap baselines (section 3.4, eq. 13).

`CAM(model)` and `GradCAM(model)` are the explainers (`ibd.CAM`, `ibd.GradCAM`): one component
per image, labelled with the class, whose heatmap is the map and whose contribution is the map's
spatial mean (w_k . GAP(A) for CAM: the logit less b_k). The functions below compute the maps.
They return raw maps at feature resolution (N x H x W), in torch, on the features' device.
ReLU, normalisation and upsampling are explicit, separate steps (`relu=`, and `normalize`,
`upsample` in `ibd.explain.maps`).

- CAM (Zhou et al. 2016; paper eq. 13): CAM_k(A) = w_k^T A, i.e. M[i, j] = sum_d w_kd A[d, i, j],
  for a network whose feature layer feeds global average pooling and a linear classifier
  h_k = w_k . GAP(A) + b_k. Then mean_ij M[i, j] + b_k = h_k, the logit; `bias=True` adds b_k to
  every position so that the map's mean is the logit itself.
- Grad-CAM (Selvaraju et al. 2017; paper eq. 13): Grad-CAM_k(A) = w_k(A)^T A with
  w_k(A) = mean_ij dh_k / dA[:, i, j] (paper eq. 12), the spatially averaged gradient of the
  pre-softmax class score. For a layer that feeds GAP + linear, dh_k/dA[d, i, j] = w_kd / (H W),
  so the Grad-CAM weights are w_k / (H W) and the Grad-CAM map is CAM / (H W) exactly.
"""

from __future__ import annotations

import torch

from ibd.errors import UserError
from ibd.explain.loop import Explainer, Part, Split
from ibd.nets.hooks import Forward
from ibd.nets.load import LoadedModel, final_linear


def cam(
    features: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    relu: bool = False,
) -> torch.Tensor:
    """CAM_k(A) = w_k^T A (+ b_k) for each sample's target k: N x H x W.

    `features` N x D x H x W, `weight` K x D (the linear classifier after GAP), `targets` N."""
    if weight.shape[1] != features.shape[1]:
        raise UserError(
            f"classifier expects {weight.shape[1]} features but the layer has "
            f"{features.shape[1]} channels: CAM needs the layer that feeds GAP -> linear"
        )
    w = weight.to(features)[targets]
    maps = torch.einsum("nd,ndhw->nhw", w, features)
    if bias is not None:
        maps = maps + bias.to(features)[targets][:, None, None]
    return maps.clamp_min(0) if relu else maps


def gradcam_weights(gradients: torch.Tensor) -> torch.Tensor:
    """w_k(A) = mean_ij dh_k/dA[:, i, j] (paper eq. 12): N x D."""
    return gradients.mean(dim=(2, 3))


def gradcam(features: torch.Tensor, gradients: torch.Tensor, *, relu: bool = False) -> torch.Tensor:
    """Grad-CAM_k(A) = w_k(A)^T A with the pooled-gradient weights: N x H x W."""
    maps = torch.einsum("nd,ndhw->nhw", gradcam_weights(gradients), features)
    return maps.clamp_min(0) if relu else maps


def is_gap_linear(
    features: torch.Tensor,
    logits: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    rtol: float = 1e-3,
) -> bool:
    """Whether the logits are exactly a linear function of the pooled features,
    h = W GAP(A) + b: the condition under which CAM and IBD decompose the score exactly."""
    if weight.shape[1] != features.shape[1]:
        return False
    predicted = features.mean(dim=(2, 3)) @ weight.to(features).T + bias.to(features)
    scale = logits.abs().max().clamp_min(1.0)
    return bool(((predicted - logits).abs().max() <= rtol * scale).item())


class CAM(Explainer):
    """CAM_k(A) = w_k^T A (paper eq. 13) for a network whose logits are w_k . GAP(A) + b_k;
    refused (one-line UserError) for any other head. `relu=True` clamps the map at 0 (the
    contribution stays the unclamped mean, w_k . GAP(A))."""

    method = "cam"
    needs_gradients = False

    def __init__(self, model: LoadedModel, *, relu: bool = False) -> None:
        super().__init__(model)
        self.relu = relu
        self._refusal = (
            f"{model.name}: the logits are not a linear function of GAP('{model.layer}'), "
            "so CAM does not apply; use --method gradcam or a GAP variant (alexnet_gap, ...)"
        )
        try:
            self.weight, self.bias = final_linear(model.model)
        except UserError:  # no nn.Linear classifier at all (SqueezeNet)
            raise UserError(self._refusal) from None

    def split(self, fwd: Forward) -> list[Split]:
        if not is_gap_linear(fwd.features, fwd.logits, self.weight, self.bias):
            raise UserError(self._refusal)
        maps = cam(fwd.features, self.weight, fwd.targets, relu=self.relu)
        means = cam(fwd.features, self.weight, fwd.targets).mean(dim=(1, 2))
        return _one_part_each(self.model, fwd, maps, means)


class GradCAM(Explainer):
    """Grad-CAM_k(A) = w_k(A)^T A with w_k(A) = mean_ij dh_k/dA (paper eq. 12-13), the
    spatially averaged gradient of the pre-softmax score of each image's own target class. On a
    GAP -> linear head it is CAM / (H W) exactly. `relu=True` clamps the map at 0."""

    method = "gradcam"
    needs_gradients = True

    def __init__(self, model: LoadedModel, *, relu: bool = False) -> None:
        super().__init__(model)
        self.relu = relu

    def split(self, fwd: Forward) -> list[Split]:
        assert fwd.gradients is not None
        maps = gradcam(fwd.features, fwd.gradients, relu=self.relu)
        means = gradcam(fwd.features, fwd.gradients).mean(dim=(1, 2))
        return _one_part_each(self.model, fwd, maps, means)


def _one_part_each(
    model: LoadedModel, fwd: Forward, maps: torch.Tensor, means: torch.Tensor
) -> list[Split]:
    return [
        ([Part(model.classes[int(k)], float(m), mp)], None)
        for k, m, mp in zip(fwd.targets, means, maps, strict=True)
    ]
