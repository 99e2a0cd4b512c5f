"""The paper's scale on one machine: cost of every stage as the concept data grows (issue 26).

For each N (default 2,000, 8,000, 32,000 and 63,305 images: full Broden) it writes a
Broden-format dataset with `benchmarks/broden_synth.py` (1,198 labels, long-tailed) and a
synthetic feature store of ResNet50 `layer4`'s shape (D = 2048, 7 x 7, float16) directly in the
store's format, then runs each stage in its own child process and records its wall time, items
per second, peak RSS (`os.wait4`'s resource usage of that child alone) and the disk it wrote:

- `broden`: writing the dataset (segmentations only; image files are hard links);
- `store`: writing the synthetic store (labels through the real reader; with
  `--direct-store`, drawn as the generator draws them, without the Broden files);
- `extract`: the real feature extraction (`ibd.data.features.build`, torchvision ResNet50,
  random weights, 224 px) on the first `--extract-images` images only, reported per image (CPU
  forward passes over 63,305 images would take hours);
- `basis_paper`, `basis_authors`: `ibd.basis.learn` with both procedures on the object and part
  concepts with at least 10 images (the paper's 660 on Broden);
- `dissect`: `ibd.dissect.dissect_store`, 2048 units x every label (all six categories);
- `decompose`: 365 random class vectors over the paper basis (`ibd.decompose`);
- `explain`: IBD explanations of 224 px images through ResNet50 with that basis and
  decomposition (images per second; independent of N).

Then per stage the growth exponent b of time ~ N^b (least squares on log-log) over the N that
ran, of wall time and of CPU time (the child's, from `os.wait4`: on a shared machine the wall
time depends on the other jobs). Targets: peak RSS <= 6 GB per stage at every N, b <= 1.1.

    .venv/bin/python benchmarks/scale.py [--sizes 2000,8000,32000,63305] [--work /tmp/scale]
    .venv/bin/python benchmarks/scale.py --quick        # small smoke run (the test suite's)

Results go to WORK/results.jsonl (one line per stage and N, appended as they finish) and a
markdown table on stdout. Each N's data is deleted after its stages unless `--keep`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

STAGES = (
    "broden",
    "store",
    "extract",
    "basis_paper",
    "basis_authors",
    "dissect",
    "decompose",
    "explain",
)
FULL_SIZES = (2000, 8000, 32000, 63305)
RSS_TARGET_GB = 6.0
EXPONENT_TARGET = 1.1
# stages whose cost does not depend on N: measured at the first N only
ONCE = ("extract", "explain")
ALL_CATEGORIES = ("color", "object", "part", "material", "scene", "texture")


# -- the stages (run in a child process each) ---------------------------------------------


def _threads(config: dict[str, Any]) -> None:
    import torch

    torch.set_num_threads(int(config["threads"]))


def stage_broden(config: dict[str, Any]) -> dict[str, Any]:
    import broden_synth

    broden_synth.write_broden(config["root"], config["n"], progress=config["progress"])
    return {"items": config["n"], "unit": "img", "disk": config["root"]}


def stage_store(config: dict[str, Any]) -> dict[str, Any]:
    import broden_synth

    if config["direct"]:
        broden_synth.write_store_direct(
            config["store"],
            config["n"],
            dim=config["dim"],
            grid=config["grid"],
            progress=config["progress"],
        )
        return {"items": config["n"], "unit": "img", "disk": config["store"], "note": "direct"}
    broden_synth.write_store(
        config["root"],
        config["store"],
        dim=config["dim"],
        grid=config["grid"],
        progress=config["progress"],
    )
    return {"items": config["n"], "unit": "img", "disk": config["store"]}


def stage_extract(config: dict[str, Any]) -> dict[str, Any]:
    import torchvision

    from ibd.data import features
    from ibd.data.broden import BrodenDataset

    _threads(config)
    k = min(config["n"], config["extract_images"])
    sub = Path(config["work"]) / "extract_broden"
    _first_rows(Path(config["root"]), sub, k)
    size = config["image_size"]
    data = BrodenDataset(sub, ("object", "part"), min_images=1, image_size=(size, size))
    model = getattr(torchvision.models, config["arch"])(num_classes=365)
    spec = features.StoreSpec(
        model={"name": config["arch"], "input": size}, layer="layer4", dataset={"root": str(sub)}
    )
    out = Path(config["work"]) / "extract_store"
    features.build(model, data, out, spec, batch_size=16, progress=config["progress"])
    return {"items": k, "unit": "img", "disk": str(out), "note": f"first {k} images"}


def _first_rows(root: Path, out: Path, k: int) -> None:
    """A Broden directory at `out` with the first k images of `root` (links, not copies)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in os.listdir(root):
        if name.endswith(".csv") and name != "index.csv":
            shutil.copy(root / name, out / name)
    with (root / "index.csv").open(encoding="utf-8") as handle:
        lines = [next(handle) for _ in range(k + 1)]
    (out / "index.csv").write_text("".join(lines), encoding="utf-8")
    (out / "images").unlink(missing_ok=True)
    (out / "images").symlink_to((root / "images").resolve())


def stage_basis(config: dict[str, Any], procedure: str) -> dict[str, Any]:
    from ibd import basis
    from ibd.data.features import FeatureStore

    _threads(config)
    store = FeatureStore(config["store"])
    settings = basis.Settings.for_procedure(procedure, **config["basis_settings"][procedure])
    result = basis.learn(store, settings, progress=config["progress"], log=lambda _: None)
    out = Path(config["work"]) / f"basis_{procedure}.npz"
    result.save(out)
    return {
        "items": store.num_images,
        "unit": "img",
        "disk": str(out),
        "note": f"{len(result.names)} concepts, mAP {result.mean_ap:.3f}",
    }


def stage_dissect(config: dict[str, Any]) -> dict[str, Any]:
    from ibd import dissect
    from ibd.data.broden import BrodenDataset
    from ibd.data.features import FeatureStore

    _threads(config)
    store = FeatureStore(config["store"])
    data = BrodenDataset(config["root"], ALL_CATEGORIES, min_images=1)
    result = dissect.dissect_store(store, data, progress=config["progress"])
    out = Path(config["work"]) / "dissect"
    dissect.write_outputs(out, result, dissect.DEFAULT_IOU_THRESHOLD, {"model": "synthetic"})
    good = len(result.interpretable(dissect.DEFAULT_IOU_THRESHOLD))
    return {
        "items": store.num_images,
        "unit": "img",
        "disk": str(out),
        "note": f"{store.dim} units x {len(result.names)} labels, {good} interpretable",
    }


def _paper_q(config: dict[str, Any]) -> np.ndarray:
    with np.load(Path(config["work"]) / "basis_paper.npz") as saved:
        return np.asarray(saved["q"], dtype=np.float64)


def stage_decompose(config: dict[str, Any]) -> dict[str, Any]:
    from ibd.decomposition import solve

    _threads(config)
    q = _paper_q(config)
    w = np.random.default_rng(0).standard_normal((365, q.shape[1])) * (q.std() + 0.01)
    dec = solve(q, w)
    out = Path(config["work"]) / "decomposition.npy"
    np.save(out, np.array([len(dec.terms(k)) for k in range(365)]))
    return {"items": 365, "unit": "class", "disk": str(out), "note": f"{len(q)} concepts"}


def _concept_parts() -> Any:
    """`concept_parts` (the IBD explanation of one image), wherever this version keeps it."""
    try:
        from ibd.explain.basis_decomposition import concept_parts
    except ImportError:
        from ibd.explain.concepts import concept_parts  # type: ignore[no-redef]
    return concept_parts


def stage_explain(config: dict[str, Any]) -> dict[str, Any]:
    import torch
    import torchvision

    from ibd.decomposition import solve
    from ibd.explain.basis_decomposition import concept_parts
    from ibd.nets import hooks

    _threads(config)
    q_np = _paper_q(config)
    torch.manual_seed(0)
    model = getattr(torchvision.models, config["arch"])(num_classes=365).eval()
    dec = solve(q_np, model.fc.weight.detach().double().numpy())
    terms = [dec.terms(k) for k in range(365)]
    q = torch.as_tensor(q_np, dtype=torch.float32)
    names = [f"c{c}" for c in range(len(q))]
    size, batch, rounds = config["image_size"], config["explain_batch"], config["explain_rounds"]
    x = torch.randn(batch, 3, size, size)
    started = time.perf_counter()
    for _ in range(rounds):
        with torch.no_grad():
            fwd = hooks.run(model, "layer4", x)
            pooled = fwd.features.mean(dim=(2, 3))
            for n, k in enumerate(fwd.targets.tolist()):
                concept_parts(
                    q, names, terms[k], fwd.features[n], pooled[n], float(fwd.logits[n, k]), top=4
                )
    seconds = time.perf_counter() - started
    return {"items": batch * rounds, "unit": "img", "seconds_inner": seconds, "disk": None}


RUNNERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "broden": stage_broden,
    "store": stage_store,
    "extract": stage_extract,
    "basis_paper": lambda c: stage_basis(c, "paper"),
    "basis_authors": lambda c: stage_basis(c, "authors"),
    "dissect": stage_dissect,
    "decompose": stage_decompose,
    "explain": stage_explain,
}


# -- the parent ---------------------------------------------------------------------------


def disk_bytes(path: str | None) -> int:
    if not path or not Path(path).exists():
        return 0
    p = Path(path)
    if p.is_file():
        return p.stat().st_blocks * 512
    total = 0
    for dirpath, _, files in os.walk(p):
        for f in files:
            fp = os.path.join(dirpath, f)
            if not os.path.islink(fp):
                total += os.stat(fp).st_blocks * 512
    return total


def _spawned(name: str, config: dict[str, Any], log: Path) -> tuple[int, Any]:
    """The stage in a fresh interpreter: (exit status, its resource usage)."""
    command = [sys.executable, str(Path(__file__).resolve()), "_stage", name, json.dumps(config)]
    with log.open("a") as out:
        child = subprocess.Popen(command, stdout=out, stderr=out)
        _, status, usage = os.wait4(child.pid, 0)
    return os.waitstatus_to_exitcode(status), usage


def _forked(name: str, config: dict[str, Any], log: Path) -> tuple[int, Any]:
    """The stage in a forked child of this process, which has imported torch and ibd already
    (`--quick`: no interpreter start per stage; the imports' pages count in its RSS as they
    do in a fresh interpreter's)."""
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            with log.open("a") as out:
                os.dup2(out.fileno(), 1)
                os.dup2(out.fileno(), 2)
                _stage_main(name, config)
                code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status, usage = os.wait4(pid, 0)
    return os.waitstatus_to_exitcode(status), usage


def _stage_main(name: str, config: dict[str, Any]) -> None:
    result = RUNNERS[name](config)
    (Path(config["work"]) / f"{name}.json").write_text(json.dumps(result))


def run_stage(
    name: str, config: dict[str, Any], log: Path, *, fork: bool = False
) -> dict[str, Any]:
    """Run one stage in a child; its wall time and its own peak RSS (os.wait4)."""
    reply = Path(config["work"]) / f"{name}.json"
    reply.unlink(missing_ok=True)
    started = time.perf_counter()
    code, usage = (_forked if fork else _spawned)(name, config, log)
    wall = time.perf_counter() - started
    record: dict[str, Any] = {"stage": name, "n": config["n"], "wall_s": wall}
    record["peak_rss_gb"] = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024) / 1e9
    # CPU seconds of the child and the children it waited for: on a shared machine wall time
    # depends on the other jobs, CPU time much less
    record["cpu_s"] = usage.ru_utime + usage.ru_stime
    if code != 0 or not reply.is_file():
        record["error"] = f"exit {code} (see {log})"
        return record
    result = json.loads(reply.read_text())
    seconds = result.pop("seconds_inner", wall)
    record.update(result)
    record["per_s"] = result["items"] / seconds if seconds > 0 else math.inf
    record["disk_gb"] = disk_bytes(result.get("disk")) / 1e9
    return record


def _preload() -> None:
    """Import what the stages import, once, before forking them (`--quick`)."""
    import broden_synth  # noqa: F401
    import torchvision  # noqa: F401

    from ibd import basis, decompose, dissect  # noqa: F401

    _concept_parts()


def exponent(sizes: Sequence[int], times: Sequence[float]) -> float | None:
    if len(sizes) < 2:
        return None
    slope, _ = np.polyfit(np.log(np.asarray(sizes, float)), np.log(np.asarray(times, float)), 1)
    return float(slope)


def _cpu(r: dict[str, Any]) -> str:
    return f"{r['cpu_s']:.1f}" if "cpu_s" in r else "-"


def table(records: Sequence[dict[str, Any]]) -> str:
    """Markdown: one row per stage and N, then per stage the growth exponents of wall and CPU
    time (log-log least squares over the N that ran) and the largest peak RSS."""
    lines = [
        "| stage | N | wall s | CPU s | throughput | peak RSS GB | disk MB | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        if "error" in r:
            lines.append(
                f"| {r['stage']} | {r['n']} | {r['wall_s']:.1f} | {_cpu(r)} | failed | "
                f"{r['peak_rss_gb']:.2f} | | {r['error']} |"
            )
            continue
        lines.append(
            f"| {r['stage']} | {r['n']} | {r['wall_s']:.1f} | {_cpu(r)} | "
            f"{r['per_s']:.1f} {r['unit']}/s | {r['peak_rss_gb']:.2f} | "
            f"{r['disk_gb'] * 1e3:.0f} | {r.get('note', '')} |"
        )
    lines += [
        "",
        "| stage | exponent b, wall (time ~ N^b) | exponent b, CPU | max peak RSS GB |",
        "|---|---|---|---|",
    ]
    for stage in dict.fromkeys(r["stage"] for r in records):
        good = [r for r in records if r["stage"] == stage and "error" not in r]
        sizes = [r["n"] for r in good]
        wall = exponent(sizes, [r["wall_s"] for r in good])
        timed = [r for r in good if "cpu_s" in r]
        cpu = exponent([r["n"] for r in timed], [r["cpu_s"] for r in timed])
        peak = max((r["peak_rss_gb"] for r in records if r["stage"] == stage), default=0.0)
        shown = ["n/a" if b is None else f"{b:.2f}" for b in (wall, cpu)]
        lines.append(f"| {stage} | {shown[0]} | {shown[1]} | {peak:.2f} |")
    return "\n".join(lines)


def configure(args: argparse.Namespace, n: int) -> dict[str, Any]:
    work = args.work / f"n{n}"
    epochs = {
        "paper": {"epochs": args.epochs, "rounds": args.rounds},
        "authors": {"epochs": args.authors_epochs},
    }
    return {
        "n": n,
        "work": str(work),
        "root": str(work / "broden"),
        "store": str(work / "store"),
        "dim": args.dim,
        "grid": args.grid,
        "threads": args.threads,
        "arch": args.arch,
        "image_size": args.image_size,
        "extract_images": args.extract_images,
        "explain_batch": args.explain_batch,
        "explain_rounds": args.explain_rounds,
        "basis_settings": {
            p: {
                **v,
                "max_positives": args.max_positives,
                "pool_size": args.pool_size,
                "bank_memory_mb": args.bank_memory,
            }
            for p, v in epochs.items()
        },
        "progress": not args.quiet,
        "direct": args.direct_store,
    }


QUICK = {
    "sizes": "60,120",
    "dim": 512,
    "arch": "resnet18",
    "image_size": 64,
    "extract_images": 8,
    "explain_batch": 2,
    "explain_rounds": 1,
    "epochs": 1,
    "rounds": 1,
    "authors_epochs": 1,
    "pool_size": 5000,
    "max_positives": 200,
}


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, FULL_SIZES)))
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--work", type=Path, default=Path("/tmp/scale"))
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--grid", type=int, default=7)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--extract-images", type=int, default=128)
    parser.add_argument("--explain-batch", type=int, default=8)
    parser.add_argument("--explain-rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2, help="paper procedure epochs per round")
    parser.add_argument("--rounds", type=int, default=1, help="paper procedure mining rounds")
    parser.add_argument("--authors-epochs", type=int, default=3)
    parser.add_argument("--pool-size", type=int, default=200_000)
    parser.add_argument("--max-positives", type=int, default=4000)
    parser.add_argument("--bank-memory", type=int, default=3072, help="basis bank budget, MiB")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per stage")
    parser.add_argument(
        "--direct-store",
        action="store_true",
        help="write the store's labels as the generator draws them, without the Broden files "
        "(for the stages that need only the store: basis, decompose, explain)",
    )
    parser.add_argument("--keep", action="store_true", help="keep each N's data")
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    return args


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "_stage":
        _stage_main(sys.argv[2], json.loads(sys.argv[3]))
        return []
    args = parse(argv)
    stages = [s for s in args.stages.split(",") if s]
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise SystemExit(f"unknown stage(s): {', '.join(sorted(unknown))}")
    if args.direct_store and {"broden", "extract", "dissect"} & set(stages):
        raise SystemExit("--direct-store writes no Broden files: drop broden, extract, dissect")
    args.work.mkdir(parents=True, exist_ok=True)
    log = args.work / "stages.log"
    if args.quick:
        _preload()
    records: list[dict[str, Any]] = []
    first = int(args.sizes.split(",")[0])
    for n in (int(s) for s in args.sizes.split(",")):
        config = configure(args, n)
        Path(config["work"]).mkdir(parents=True, exist_ok=True)
        for name in stages:
            if name in ONCE and n != first:
                continue
            record = run_stage(name, config, log, fork=args.quick)
            records.append(record)
            with (args.work / "results.jsonl").open("a") as handle:
                handle.write(json.dumps(record) + "\n")
            print(json.dumps(record), flush=True)
        if not args.keep:
            shutil.rmtree(config["work"], ignore_errors=True)
    print(table(records))
    return records


if __name__ == "__main__":
    main()
