"""Simulated raters for demos, tests and load tests: never for results.

Each rater answers tasks over the real HTTP API (`POST /api/assignments`, then
`POST /api/assignments/<id>/response`) as platform `simulated`, so the server stores every answer
flagged (`simulated = 1` in the `ratings` view) and the analysis leaves it out unless asked.

A rater judges what each robot shows against the concept world's ground truth:
- the shown masks come from the batch's `masks.npz` (the exact top-20% masks of the pages);
- the true concept masks come from the world's Broden files (`index.csv`, `label.csv`, the
  R + 256 G segmentation planes), the class rules from `world.json`.

Quality of one robot = the mean over its shown components of
    0.5 * [the named concept is in the image] + 0.5 * overlap(mask, the concept's true mask),
with overlap(m, g) = |m & g| / min(|m|, |g|) (1 when the mask sits inside a small concept or covers
a large one). A CAM / Grad-CAM robot names only the class; its mask is compared with the union of
the class's defining concepts. The rater prefers the robot with the higher quality: with
d = q_A - q_B + position bias + noise, the answer is 1 (A clearly) for d > t_clear,
2 for d > t_slight, 3 for |d| <= t_slight, then 4 and 5 symmetrically. Each rater has their own
bias, noise and thresholds (seeded), and a fraction of raters are careless (uniformly random
answers), so catch trials and the exclusion rule have something to find.

What this rewards (naming only concepts that are in the image; masks on their target) and why
it prefers CAM to IBD on the concept world: docs/hitserver.md, "What the simulated raters
reward"; `benchmarks/rater_quality.py` measures it on a demo's batches.
"""

from __future__ import annotations

import csv
import http.client
import json
import random
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from hitserver.errors import UserError

CLASS_LEVEL_METHODS = ("cam", "gradcam")


@dataclass(frozen=True)
class Rater:
    """One simulated person's habits."""

    worker_id: str
    bias: float  # > 0 leans towards Robot A
    noise: float
    slight: float
    clear: float
    careless: bool

    @staticmethod
    def draw(index: int, seed: int, careless_rate: float) -> Rater:
        rng = random.Random(f"{seed}-{index}")
        return Rater(
            worker_id=f"sim-{seed}-{index:03d}",
            bias=rng.gauss(0.0, 0.05),
            noise=rng.uniform(0.03, 0.15),
            slight=rng.uniform(0.04, 0.10),
            clear=rng.uniform(0.20, 0.35),
            careless=rng.random() < careless_rate,
        )


class WorldTruth:
    """Per-image concept masks and class rules of a concept world (Broden format)."""

    def __init__(self, world: Path) -> None:
        try:
            with (world / "label.csv").open(newline="") as handle:
                self.names = {int(r["number"]): r["name"] for r in csv.DictReader(handle)}
            with (world / "index.csv").open(newline="") as handle:
                self.rows = {r["image"]: r for r in csv.DictReader(handle)}
            rules = json.loads((world / "world.json").read_text())
        except (OSError, KeyError, ValueError) as exc:
            raise UserError(f"cannot read the concept world in {world}: {exc}") from None
        self.world = world
        self.defining = {c["name"]: list(c["defining"]) for c in rules["classes"]}
        self._cache: dict[str, dict[str, np.ndarray]] = {}
        self._lock = threading.Lock()

    def masks(self, image: str) -> dict[str, np.ndarray]:
        """Concept name -> boolean mask at segmentation size, for the world image `image`."""
        key = Path(image).name
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        row = self.rows.get(key)
        if row is None:
            raise UserError(f"{image} is not an image of the world in {self.world}")
        found: dict[str, np.ndarray] = {}
        for category in ("object", "part"):
            for plane in filter(None, (row.get(category) or "").split(";")):
                if not plane.endswith(".png"):
                    continue
                rgb = np.asarray(Image.open(self.world / "images" / plane).convert("RGB"))
                numbers = rgb[..., 0].astype(np.int64) + 256 * rgb[..., 1].astype(np.int64)
                for number in np.unique(numbers):
                    if number and int(number) in self.names:
                        name = self.names[int(number)]
                        found[name] = found.get(name, False) | (numbers == number)
        with self._lock:
            self._cache[key] = found
        return found


def overlap(mask: np.ndarray, truth: np.ndarray) -> float:
    """|m & g| / min(|m|, |g|), 0 when either is empty."""
    if mask.shape != truth.shape:
        resized = Image.fromarray(truth.astype(np.uint8) * 255).resize(
            (mask.shape[1], mask.shape[0]), Image.Resampling.NEAREST
        )
        truth = np.asarray(resized) > 0
    smaller = min(int(mask.sum()), int(truth.sum()))
    return float((mask & truth).sum()) / smaller if smaller else 0.0


def class_region(
    truth: dict[str, np.ndarray], defining: list[str], shape: tuple[int, ...]
) -> np.ndarray:
    """The union of the class's defining concepts that the image shows, at `shape`: what a
    CAM / Grad-CAM mask is compared with."""
    union = np.zeros(shape, dtype=bool)
    for name in defining:
        if name in truth:
            union |= fit_mask(truth[name], shape)
    return union


def quality(
    side: dict[str, Any], masks: list[np.ndarray], truth: dict[str, np.ndarray], defining: list[str]
) -> tuple[float, str | None]:
    """The quality of one robot's explanation, and the name of its worst component."""
    if side["method"] in CLASS_LEVEL_METHODS:
        if not masks:
            return 0.0, None
        return 0.5 + 0.5 * overlap(masks[0], class_region(truth, defining, masks[0].shape)), None
    scores = []
    for concept, mask in zip(side["concepts"], masks, strict=True):
        present = concept in truth
        scores.append(0.5 * present + (0.5 * overlap(mask, truth[concept]) if present else 0.0))
    if not scores:
        return 0.0, None
    worst = side["concepts"][int(np.argmin(scores))]
    return float(np.mean(scores)), worst


def fit_mask(truth: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """`truth` resized to `shape` (nearest neighbour), as `overlap` compares them."""
    if truth.shape == shape:
        return truth
    resized = Image.fromarray(truth.astype(np.uint8) * 255).resize(
        (shape[1], shape[0]), Image.Resampling.NEAREST
    )
    return np.asarray(resized) > 0


def choose(rater: Rater, q_a: float, q_b: float, rng: random.Random) -> int:
    """The Likert answer (1 = A clearly ... 5 = B clearly) of `rater`."""
    if rater.careless:
        return rng.randint(1, 5)
    d = q_a - q_b + rater.bias + rng.gauss(0.0, rater.noise)
    if d > rater.clear:
        return 1
    if d > rater.slight:
        return 2
    if d >= -rater.slight:
        return 3
    if d >= -rater.clear:
        return 4
    return 5


OPENERS = (
    "", "I think", "To me", "Honestly,", "Looking closely,", "At first glance", "Overall",
    "After comparing both,", "In my view", "Hmm,", "Well,", "Clearly",
)  # fmt: skip
CLOSERS = (
    "", "that decided it.", "so I went with that.", "as far as I can tell.",
    "which matters most here.", "the rest looked fine.", "not a hard call.",
    "though it was close.", "that is my reason.", "it seemed obvious.",
)  # fmt: skip
# What a person mentions besides the explanation: a detail of the photo, in their words.
COLOURS = ("grey", "blue", "dark", "bright", "green", "small", "large", "white", "red", "pale")
THINGS = (
    "shape", "patch", "area", "edge", "corner", "stripe", "spot", "outline", "block", "blob",
    "shadow", "line", "part", "texture", "surface",
)  # fmt: skip
PLACES = (
    "on the left", "on the right", "at the top", "at the bottom", "in the middle",
    "near the edge", "behind it", "in front", "across the photo", "in the corner",
)  # fmt: skip
CARELESS_REASON = "The robot I chose gives the more reasonable explanation of the picture."
"""What every careless rater pastes into the reason box (the same text: near-identical)."""


def _core(choice: int, worst_a: str | None, worst_b: str | None, rng: random.Random) -> str:
    if choice == 3:
        return rng.choice(
            [
                "both explanations point at similar things in the picture",
                "I can't see much difference between the two robots",
                "the two robots highlight about the same regions",
            ]
        )
    loser, worst = ("B", worst_b) if choice in (1, 2) else ("A", worst_a)
    winner = "A" if loser == "B" else "B"
    if not worst:
        return f"robot {winner}'s highlighted region fits the scene better"
    return rng.choice(
        [
            f"robot {loser}'s '{worst}' highlight does not match the picture well",
            f"the '{worst}' region robot {loser} shows is not really a {worst}",
            f"robot {loser} marks something as '{worst}' that I cannot see there",
            f"robot {winner}'s highlights fit and robot {loser}'s '{worst}' does not",
        ]
    )


def reason(choice: int, worst_a: str | None, worst_b: str | None, rng: random.Random) -> str:
    """A short written reason in a rater's words: the judgement, a detail of the photo, and an
    opener and a closer, drawn per answer, so that two raters seldom write near-identical
    reasons (as people do not)."""
    detail = f"I looked at the {rng.choice(COLOURS)} {rng.choice(THINGS)} {rng.choice(PLACES)}"
    parts = (rng.choice(OPENERS), _core(choice, worst_a, worst_b, rng) + ";", detail,
             rng.choice(CLOSERS))  # fmt: skip
    text = " ".join(part for part in parts if part)
    return text[0].upper() + text[1:]


def telemetry(rater: Rater, text: str, rng: random.Random) -> dict[str, Any]:
    """What the task page would have measured: careful raters look for a while and type;
    careless ones glance and paste the same stock reason (what the exclusion rules catch).
    The server's own time, claim to submit, is real and short for every simulated rater."""
    if rater.careless:
        visible, blurs, pasted = rng.uniform(1.0, 4.0), rng.randint(0, 3), len(text)
    else:
        visible, blurs, pasted = max(3.0, rng.gauss(25.0, 8.0)), int(rng.random() < 0.2), 0
    return {
        "visible_s": round(visible, 3),
        "blur_count": blurs,
        "paste_count": int(pasted > 0),
        "pasted_chars": pasted,
        "reason_chars": len(text),
    }


@dataclass
class Outcome:
    answered: int = 0
    by_worker: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


class Study:
    """The batches being answered: manifest items by id and each batch's shown masks."""

    def __init__(self, batches: list[Path], world: Path) -> None:
        self.items: dict[str, tuple[dict[str, Any], Path]] = {}
        for batch in batches:
            try:
                manifest = json.loads((batch / "manifest.json").read_text())
            except (OSError, ValueError) as exc:
                raise UserError(f"cannot read {batch / 'manifest.json'}: {exc}") from None
            if not (batch / "masks.npz").exists():
                raise UserError(f"{batch} has no masks.npz (rebuild it with this hitgen)")
            for item in manifest["items"]:
                self.items[item["id"]] = (item, batch)
        self.truth = WorldTruth(world)
        self._masks: dict[Path, Any] = {}
        self._lock = threading.Lock()

    def shown_masks(self, batch: Path, names: list[str]) -> list[np.ndarray]:
        with self._lock:
            if batch not in self._masks:
                with np.load(batch / "masks.npz") as npz:
                    self._masks[batch] = {k: npz[k] for k in npz.files}
            table = self._masks[batch]
        return [table[name] for name in names]

    def judge(self, item_id: str, rater: Rater, rng: random.Random) -> tuple[int, str]:
        item, batch = self.items[item_id]
        truth = self.truth.masks(item["source_image"])
        defining = self.truth.defining.get(item["class_name"], [])
        a = item[item["robot_a"]]
        b = item["second" if item["robot_a"] == "first" else "first"]
        q_a, worst_a = quality(a, self.shown_masks(batch, a["masks"]), truth, defining)
        q_b, worst_b = quality(b, self.shown_masks(batch, b["masks"]), truth, defining)
        choice = choose(rater, q_a, q_b, rng)
        if rater.careless:
            return choice, CARELESS_REASON
        return choice, reason(choice, worst_a, worst_b, rng)


def _post(base_url: str, path: str, body: dict[str, Any], timeout: float) -> tuple[int, Any]:
    """POST JSON to the server; (status, decoded body). Raises UserError when no HTTP answer
    comes back at all (nothing listening, a timeout, not an HTTP server, a malformed URL)."""
    try:
        request = urllib.request.Request(
            base_url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:  # an HTTP answer, only not a 2xx one
        status, raw = exc.code, exc.read()
    except urllib.error.URLError as exc:
        raise UserError(f"the server at {base_url} cannot be reached ({exc.reason})") from None
    except (OSError, http.client.HTTPException) as exc:
        raise UserError(f"the server at {base_url} cannot be reached ({exc})") from None
    except ValueError as exc:  # urllib's "unknown url type" and the like
        raise UserError(f"--url {base_url!r} is not an http:// URL ({exc})") from None
    try:
        return status, json.loads(raw) if raw else {}
    except ValueError:
        return status, {"error": raw[:200].decode(errors="replace")}


def claim_task(
    rater: Rater, study: Study, base_url: str, timeout: float
) -> tuple[dict[str, Any] | None, str | None]:
    """A new task for `rater`: (task, None); (None, None) when nothing is left for them;
    (None, error) when the server refused."""
    status, task = _post(
        base_url,
        "/api/assignments",
        {"worker_id": rater.worker_id, "platform": "simulated"},
        timeout,
    )
    if status == 204:
        return None, None
    if status != 201 or not isinstance(task, dict):
        return None, f"{rater.worker_id}: assignment {status} {task}"
    if task.get("item_id") not in study.items:
        return None, f"item {task.get('item_id')} is in no batch given to simulate"
    return task, None


def answer_task(
    rater: Rater,
    rng: random.Random,
    study: Study,
    task: dict[str, Any],
    base_url: str,
    timeout: float,
) -> str | None:
    """Judge the claimed task as `rater` and submit the answer; the error, or None."""
    choice, text = study.judge(task["item_id"], rater, rng)
    status, body = _post(
        base_url,
        f"/api/assignments/{task['assignment_id']}/response",
        {
            "token": task["token"],
            "choice": choice,
            "reason": text,
            "telemetry": telemetry(rater, text, rng),
        },
        timeout,
    )
    if status not in (200, 201):
        return f"{rater.worker_id}: response {status} {body}"
    return None


def simulate(
    base_url: str,
    batches: list[Path],
    world: Path,
    *,
    raters: int = 40,
    seed: int = 0,
    careless_rate: float = 0.1,
    max_items: int = 1000,
    threads: int = 8,
    timeout: float = 30.0,
    progress: bool = True,
) -> Outcome:
    """Let `raters` simulated raters answer over HTTP until none has anything left.

    Work goes in rounds, each active rater answering one task per round (as a crowd does,
    rather than the first raters taking everything); a rater leaves when the server answers
    204 (nothing left for them) or after `max_items` answers.

    Reproducible from `seed` against a fresh server: in each round the raters claim one after
    the other in a fixed order, so who gets which item does not depend on thread timing (the
    server hands out slots in a fixed order); only judging and submitting run on `threads`
    threads, and no answer of a round changes what that round's claims got."""
    from tqdm import tqdm

    study = Study(batches, world)
    outcome = Outcome()
    crowd = [Rater.draw(i, seed, careless_rate) for i in range(raters)]
    rngs = {r.worker_id: random.Random(r.worker_id) for r in crowd}
    base = base_url.rstrip("/")
    active = list(crowd)
    with (
        tqdm(desc="simulated answers", unit="answer", disable=not progress) as bar,
        ThreadPoolExecutor(max_workers=max(1, threads)) as pool,
    ):
        while active and not outcome.errors:
            claimed: list[tuple[Rater, dict[str, Any]]] = []
            for rater in active:  # one after the other: cheap, and the order is the seed's
                task, error = claim_task(rater, study, base, timeout)
                if error:
                    outcome.errors.append(error)
                elif task is not None:
                    claimed.append((rater, task))
            errors = pool.map(
                lambda pair: answer_task(
                    pair[0], rngs[pair[0].worker_id], study, pair[1], base, timeout
                ),
                claimed,
            )
            still = []
            for (rater, _task), error in zip(claimed, list(errors), strict=True):
                if error:
                    outcome.errors.append(error)
                    continue
                outcome.answered += 1
                done = outcome.by_worker.get(rater.worker_id, 0) + 1
                outcome.by_worker[rater.worker_id] = done
                bar.update()
                if done < max_items:
                    still.append(rater)
            active = still
    return outcome
