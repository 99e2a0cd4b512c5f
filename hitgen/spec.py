"""What one batch is built from: settings from the command line and/or a study config file.

A study config (`.toml` or `.json`) holds default settings at the top level and, optionally, a
list `batches` of per-batch settings; without `batches` the top level describes one batch.
Keys are the long flags of `hitgen build` with `_` for `-`:

    pair = ["ibd", "cam"]            # method vs method (Fig. 8) ...
    model = "resnet50"
    models = ["resnet50", "resnet18"] # ... or model vs model (Fig. 9), with
    method = "ibd"
    explanations = ["expl/r50-ibd", "expl/r50-cam"]   # one dir for both, or one per side
    n = 200, seed = 0, catch_rate = 0.1, catch_types = ["identical", "wrong"]
    batch = "name", out = "dir", max_side = 256, images = ["img/1.png", ...], standalone = false

Relative paths in a config file are relative to the file's directory.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hitgen.errors import UserError
from hitgen.explanations import METHODS
from hitgen.paths import batches_dir, explanations_dir
from hitgen.plan import CATCH_TYPES

METHOD_VS_METHOD = "method-vs-method"
MODEL_VS_MODEL = "model-vs-model"
DEFAULT_MODEL = "world_resnet"  # the concept world's reference network (ResNet50's role)
BATCH_NAME = re.compile(r"[A-Za-z0-9_.-]+")

DEFAULTS: dict[str, Any] = {
    "n": 200,
    "seed": 0,
    "catch_rate": 0.1,
    "catch_types": list(CATCH_TYPES),
    "max_side": 256,
    "standalone": False,
}
# settings that name what a batch compares, not how
EXPERIMENT_KEYS = ("pair", "model", "models", "method", "explanations", "batch", "out", "images")
KEYS = set(DEFAULTS) | set(EXPERIMENT_KEYS)
PATH_KEYS = ("explanations", "out", "images")


@dataclass(frozen=True)
class Source:
    """One side's explanations: `model`'s `method` explanations in `directory`."""

    model: str | None  # None: whichever single model the directory holds
    method: str
    directory: Path


@dataclass(frozen=True)
class BatchSpec:
    experiment: str
    first: Source
    second: Source
    batch: str | None  # None: named after what it compares once the model is known
    out: Path | None  # None: $IBD_HOME/batches/<batch>
    n: int
    seed: int
    catch_rate: float
    catch_types: tuple[str, ...]
    max_side: int | None
    standalone: bool
    images: tuple[Path, ...] | None


def read_config(path: Path) -> list[dict[str, Any]]:
    """The settings of each batch a study config file describes, each batch's own keys over the
    top-level ones, with relative paths rebased onto the file's directory."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text.decode("utf-8"))
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise UserError(f"{path}: a study config must be a .toml or .json file")
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not valid {path.suffix[1:].upper()} ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a table/object at the top level")
    batches = data.pop("batches", None)
    # The same file may carry the analysis' exclusion rules (`analysis --config`).
    data.pop("exclusion", None)
    _check_keys(data, f"{path}")
    if batches is None:
        entries = [{}]
    elif isinstance(batches, list) and batches and all(isinstance(b, dict) for b in batches):
        entries = batches
    else:
        raise UserError(f"{path}: 'batches' must be a non-empty list of tables")
    for number, entry in enumerate(entries):
        _check_keys(entry, f"{path}: batches[{number}]")
    return [_rebase({**data, **entry}, path.parent) for entry in entries]


def _check_keys(settings: Mapping[str, Any], where: str) -> None:
    unknown = sorted(set(settings) - KEYS)
    if unknown:
        raise UserError(
            f"{where}: unknown setting {unknown[0]!r} (known: {', '.join(sorted(KEYS))})"
        )


def _rebase(settings: dict[str, Any], base: Path) -> dict[str, Any]:
    out = dict(settings)
    for key in PATH_KEYS:
        value = out.get(key)
        if isinstance(value, str):
            out[key] = str(base / value)
        elif isinstance(value, list):
            out[key] = [str(base / v) if isinstance(v, str) else v for v in value]
    return out


def _names(value: Any, key: str, count: int | None = None) -> list[str]:
    """A list of names from "a,b" or ["a", "b"]."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(x, str) and x.strip() for x in items):
        raise UserError(f"{key}: expected names separated by commas, got {value!r}")
    names = [x.strip() for x in items]
    if count is not None and len(names) != count:
        raise UserError(f"{key}: expected {count} names, got {len(names)} ({value!r})")
    return names


def _number(settings: Mapping[str, Any], key: str, kind: type) -> Any:
    value = settings[key]
    ok = isinstance(value, kind) or (kind is float and isinstance(value, int))
    if isinstance(value, bool) or not ok:
        raise UserError(
            f"{key}: expected a{'n integer' if kind is int else ' number'}, got {value!r}"
        )
    return kind(value)


def _method(name: str, key: str) -> str:
    if name not in METHODS:
        raise UserError(f"{key}: unknown method {name!r} (one of {', '.join(METHODS)})")
    return name


def _pair(s: Mapping[str, Any]) -> tuple[list[str | None], list[str]]:
    """Method vs method: the (models, methods) of the two sides."""
    methods = [_method(m, "--pair") for m in _names(s["pair"], "--pair", 2)]
    if methods[0] == methods[1]:
        raise UserError(f"--pair: compare two different methods, not {methods[0]} twice")
    model = s.get("model")
    if model is not None and not isinstance(model, str):
        raise UserError(f"--model: expected a name, got {model!r}")
    return [model, model], methods


def _model_pair(s: Mapping[str, Any]) -> tuple[list[str | None], list[str]]:
    """Model vs model: the (models, methods) of the two sides."""
    if "models" not in s or "method" not in s:
        raise UserError("model vs model needs both --models A,B and --method M")
    if "model" in s:
        raise UserError("--model is for --pair; with --models name both models there")
    models: list[str | None] = list(_names(s["models"], "--models", 2))
    if models[0] == models[1]:
        raise UserError(f"--models: compare two different models, not {models[0]} twice")
    method = _method(_names(s["method"], "--method", 1)[0], "--method")
    return models, [method, method]


def _experiment(s: Mapping[str, Any]) -> tuple[str, list[str | None], list[str]]:
    """What the batch compares: (experiment, models, methods), one of each per side."""
    if "pair" in s and ("models" in s or "method" in s):
        raise UserError("give either --pair (method vs method) or --models/--method, not both")
    if "pair" in s:
        return (METHOD_VS_METHOD, *_pair(s))
    if "models" in s or "method" in s:
        return (MODEL_VS_MODEL, *_model_pair(s))
    raise UserError("say what to compare: --pair M1,M2 [--model NAME] or --models A,B --method M")


def _directories(
    dirs: Any, experiment: str, models: list[str | None], methods: list[str], home: Path
) -> tuple[list[str | None], list[Path]]:
    """Each side's explanation directory, given (`dirs`: one for both, or one per side) or the
    concept world's default; method vs method with no directory given names the default model."""
    if dirs is None:
        default_model = [m or DEFAULT_MODEL for m in models]
        directories = [
            explanations_dir(home, mdl, mth)
            for mdl, mth in zip(default_model, methods, strict=True)
        ]
        return (list(default_model) if experiment == METHOD_VS_METHOD else models), directories
    given = [dirs] if isinstance(dirs, str) else dirs
    if (
        not isinstance(given, list)
        or not 1 <= len(given) <= 2
        or not all(isinstance(d, str) and d for d in given)
    ):
        raise UserError(
            f"--explanations: give one directory, or one per side, as paths; got {dirs!r}"
        )
    return models, [Path(given[0]), Path(given[-1])]


def _catch_types(raw: Any) -> tuple[str, ...]:
    catch_types = () if raw in ("", []) else tuple(_names(raw, "--catch-types"))
    for kind in catch_types:
        if kind not in CATCH_TYPES:
            raise UserError(
                f"--catch-types: unknown type {kind!r} (one of {', '.join(CATCH_TYPES)})"
            )
    if len(set(catch_types)) != len(catch_types):
        raise UserError("--catch-types: each type once")
    return catch_types


def _sizes(s: Mapping[str, Any]) -> tuple[int, float, int]:
    """(n, catch rate, max side), checked."""
    n = _number(s, "n", int)
    if n < 1:
        raise UserError(f"--n: need at least one item, got {n}")
    catch_rate = _number(s, "catch_rate", float)
    if not 0.0 <= catch_rate < 1.0:
        raise UserError(f"--catch-rate: must be in [0, 1), got {catch_rate}")
    max_side = _number(s, "max_side", int)
    if max_side < 0:
        raise UserError(f"--max-side: must be positive (0 keeps the size), got {max_side}")
    return n, catch_rate, max_side


def _check_names(s: Mapping[str, Any]) -> None:
    """The batch name, standalone flag, image list and output directory, where given."""
    batch = s.get("batch")
    if batch is not None and (not isinstance(batch, str) or not BATCH_NAME.fullmatch(batch)):
        raise UserError(f"--batch: {batch!r} must use only letters, digits, '_', '.', '-'")
    if not isinstance(s["standalone"], bool):
        raise UserError(f"standalone: expected true or false, got {s['standalone']!r}")
    images = s.get("images")
    if images is not None and (
        not isinstance(images, list) or not all(isinstance(x, str) for x in images)
    ):
        raise UserError("images: expected a list of image paths")
    out = s.get("out")
    if out is not None and (not isinstance(out, str) or not out):
        raise UserError(f"--out: expected a directory path, got {out!r}")


def resolve(settings: Mapping[str, Any], home: Path) -> BatchSpec:
    """Check one batch's merged settings and fill in the concept-world defaults under `home`."""
    s = {**DEFAULTS, **settings}
    experiment, models, methods = _experiment(s)
    models, directories = _directories(s.get("explanations"), experiment, models, methods, home)
    catch_types = _catch_types(s["catch_types"])
    n, catch_rate, max_side = _sizes(s)
    _check_names(s)
    images, out = s.get("images"), s.get("out")
    return BatchSpec(
        experiment=experiment,
        first=Source(models[0], methods[0], directories[0]),
        second=Source(models[1], methods[1], directories[1]),
        batch=s.get("batch"),
        out=Path(out) if out is not None else None,
        n=n,
        seed=_number(s, "seed", int),
        catch_rate=catch_rate,
        catch_types=catch_types,
        max_side=max_side or None,
        standalone=s["standalone"],
        images=tuple(Path(x) for x in images) if images is not None else None,
    )


def default_batch_name(experiment: str, first: tuple[str, str], second: tuple[str, str]) -> str:
    """`fig8-<model>-<m1>-vs-<m2>` or `fig9-<method>-<model1>-vs-<model2>` from (model, method)s."""
    if experiment == METHOD_VS_METHOD:
        name = f"fig8-{first[0]}-{first[1]}-vs-{second[1]}"
    else:
        name = f"fig9-{first[1]}-{first[0]}-vs-{second[0]}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def out_dir(spec: BatchSpec, batch: str, home: Path) -> Path:
    return spec.out if spec.out is not None else batches_dir(home) / batch


def command_line(spec: BatchSpec, models: tuple[str, str]) -> str:
    """The settings as a `hitgen build` command, without the directories read and written, so it
    is the same wherever the inputs and outputs lie (an `--images` restriction is included)."""
    if spec.experiment == METHOD_VS_METHOD:
        what = f"--pair {spec.first.method},{spec.second.method} --model {models[0]}"
    else:
        what = f"--models {models[0]},{models[1]} --method {spec.first.method}"
    parts = [
        f"hitgen build {what}",
        f"--n {spec.n}",
        f"--seed {spec.seed}",
        f"--catch-rate {spec.catch_rate:g}",
        f"--catch-types {','.join(spec.catch_types)}" if spec.catch_types else "--catch-types ''",
        f"--max-side {spec.max_side or 0}",
    ]
    if spec.standalone:
        parts.append("--standalone")
    if spec.images is not None:
        # the restriction decides which items there are, so it is recorded: the listed paths as
        # given (like `source_image`), as a bash process substitution that `--images` can read
        listed = " ".join(shlex.quote(str(image)) for image in spec.images)
        parts.append(f"--images <(printf '%s\\n' {listed})")
    return " ".join(parts)
