"""Which comparisons the answers contain, how to name them, and in which order to show them.

A comparison is every non-catch rating sharing (experiment, first model, first method, second
model, second method). Fig. 8 holds the method-vs-method comparisons (one network, the method of
interest against another method); Fig. 9 the model-vs-model ones (one method, the reference model
against another model). Names come from the data, so any models and methods plot.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pandas as pd

FIGURES: dict[str, str] = {"method-vs-method": "fig8", "model-vs-model": "fig9"}
FIGURE_TITLES: dict[str, str] = {
    "fig8": "Method vs method (same network)",
    "fig9": "Model vs model (same method)",
}

METHOD_NAMES: dict[str, str] = {
    "ibd": "IBD",
    "netdissect": "NetDissect",
    "cam": "CAM",
    "gradcam": "Grad-CAM",
}
METHOD_ORDER: tuple[str, ...] = tuple(METHOD_NAMES)
MIRROR_SUFFIX = "_mirror"

KEY_COLUMNS: list[str] = [
    "experiment",
    "first_model",
    "first_method",
    "second_model",
    "second_method",
]


def model_name(model: str) -> str:
    """How a model is shown: a mirrored model `X_mirror` reads `X*`, as resnet50* in the paper."""
    if model.endswith(MIRROR_SUFFIX) and len(model) > len(MIRROR_SUFFIX):
        return model[: -len(MIRROR_SUFFIX)] + "*"
    return model


def method_name(method: str) -> str:
    """How a method is shown (IBD, CAM, Grad-CAM, NetDissect; others as given)."""
    return METHOD_NAMES.get(method, method)


def _model_key(model: str) -> tuple[str, bool]:
    # A mirrored model sorts right after the model it mirrors.
    mirrored = model.endswith(MIRROR_SUFFIX)
    return (model[: -len(MIRROR_SUFFIX)] if mirrored else model, mirrored)


def _method_key(method: str) -> tuple[int, str]:
    rank = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
    return (rank, method)


@dataclass(frozen=True)
class Comparison:
    """One bar of Fig. 8 or Fig. 9."""

    experiment: str
    first_model: str
    first_method: str
    second_model: str
    second_method: str

    @property
    def figure(self) -> str:
        return FIGURES[self.experiment]

    @property
    def group(self) -> str:
        """What the bar holds fixed: the network (Fig. 8) or the method (Fig. 9)."""
        if self.figure == "fig8" and self.first_model == self.second_model:
            return model_name(self.first_model)
        if self.figure == "fig9" and self.first_method == self.second_method:
            return method_name(self.first_method)
        return ""

    @property
    def label(self) -> str:
        """'world_resnet: IBD vs CAM' (Fig. 8), 'IBD: world_resnet vs world_alexnet' (Fig. 9)."""
        if self.group:
            return f"{self.heading} {self.against}"
        return (
            f"{model_name(self.first_model)} {method_name(self.first_method)} vs "
            f"{model_name(self.second_model)} {method_name(self.second_method)}"
        )

    @property
    def focus(self) -> str:
        """The explanation being evaluated, in words: the method (Fig. 8) or model (Fig. 9)."""
        if self.figure == "fig8":
            return method_name(self.first_method)
        return model_name(self.first_model)

    @property
    def against(self) -> str:
        """What the focus is compared against: the other method (Fig. 8) or model (Fig. 9)."""
        if self.figure == "fig8":
            return method_name(self.second_method)
        return model_name(self.second_model)

    @property
    def heading(self) -> str:
        """The part that a run of bars shares: 'world_resnet: IBD vs' (Fig. 8) or
        'IBD: world_resnet vs' (Fig. 9); empty for a comparison that varies both."""
        return f"{self.group}: {self.focus} vs" if self.group else ""

    def sort_key(self) -> tuple[object, ...]:
        models = (_model_key(self.first_model), _model_key(self.second_model))
        methods = (_method_key(self.first_method), _method_key(self.second_method))
        if self.figure == "fig8":
            return (self.figure, models[0], methods, models[1])
        return (self.figure, methods[0], models, methods[1])


def from_items(items: pd.DataFrame) -> tuple[Comparison, ...]:
    """Every comparison that the manifests' non-catch items make, in display order."""
    real = items[items["kind"] != "catch"]
    keys = real[KEY_COLUMNS].drop_duplicates().itertuples(index=False)
    return tuple(
        sorted((Comparison(*(str(k) for k in key)) for key in keys), key=Comparison.sort_key)
    )


def split(
    ratings: pd.DataFrame, planned: Iterable[Comparison] = ()
) -> Iterator[tuple[Comparison, pd.DataFrame]]:
    """Non-catch ratings grouped by comparison, in display order (Fig. 8, then Fig. 9).

    Each `planned` comparison (one that a manifest makes) comes out even without a rating, with
    an empty frame, so that a comparison nobody answered is shown as N=0 instead of vanishing.
    """
    real = ratings[~ratings["is_catch"]]
    groups = {
        Comparison(*(str(k) for k in key)): frame
        for key, frame in real.groupby(KEY_COLUMNS, sort=False)
    }
    for comp in planned:
        groups.setdefault(comp, real.iloc[0:0])
    yield from sorted(groups.items(), key=lambda g: g[0].sort_key())
