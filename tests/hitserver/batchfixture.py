"""Test fixture: writes a small task batch exactly as docs/contracts.md 7 describes it
(manifest.json, images/, pages/<id>.html with the hit-config placeholder, index.html,
input.csv), so the server's tests do not depend on hitgen. Not product code."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from PIL import Image

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Which Robot Do You Trust?</title>
<!-- hit-config -->
</head>
<body>
<p id="progress"></p>
<h1>The robot thinks this picture shows: @class_name@</h1>
<img id="photo" src="../@image@" alt="photo" width="32" height="32">
<div class="robot" id="robot-a"><h2>Robot A</h2><ol>@a_concepts@</ol>@a_masks@</div>
<div class="robot" id="robot-b"><h2>Robot B</h2><ol>@b_concepts@</ol>@b_masks@</div>
<form id="task-form">
  <input type="hidden" name="assignmentId" value="">
  <label><input type="radio" name="choice" value="1" required>
    Robot A clearly more reasonable</label>
  <label><input type="radio" name="choice" value="2"> Robot A slightly more reasonable</label>
  <label><input type="radio" name="choice" value="3"> Equally reasonable</label>
  <label><input type="radio" name="choice" value="4"> Robot B slightly more reasonable</label>
  <label><input type="radio" name="choice" value="5"> Robot B clearly more reasonable</label>
  <label>Explain your choice <textarea name="reason" required maxlength="2000"></textarea></label>
  <button id="submit-button" type="submit">Submit</button>
  <p id="status"></p>
</form>
<script>
(function () {
  var form = document.getElementById("task-form");
  var button = document.getElementById("submit-button");
  var status = document.getElementById("status");
  var configBlock = document.getElementById("hit-config");
  var params = new URLSearchParams(window.location.search);
  if (configBlock) {
    var config = JSON.parse(configBlock.textContent);
    document.getElementById("progress").textContent = config.progress;
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var picked = form.querySelector('input[name="choice"]:checked');
      button.disabled = true;
      fetch(config.submit_url, {
        method: "POST",
        headers: {"Content-Type": "application/json"},
        body: JSON.stringify({token: config.token, choice: parseInt(picked.value, 10),
                              reason: form.elements["reason"].value})
      }).then(function (response) {
        if (response.status === 200 || response.status === 201) {
          window.location.href = config.next_url;
        } else {
          return response.json().then(function (body) {
            status.textContent = body.error;
            button.disabled = false;
          });
        }
      }).catch(function () {
        status.textContent = "Network error; please try again.";
        button.disabled = false;
      });
    });
  } else if (params.has("assignmentId")) {
    var assignmentId = params.get("assignmentId");
    if (assignmentId === "ASSIGNMENT_ID_NOT_AVAILABLE") {
      button.disabled = true;
      status.textContent = "Preview: accept the HIT to answer.";
    } else {
      form.elements["assignmentId"].value = assignmentId;
      form.method = "POST";
      form.action = params.get("turkSubmitTo") + "/mturk/externalSubmit";
    }
  } else {
    button.disabled = true;
    status.textContent = "Preview only.";
  }
})();
</script>
</body>
</html>
"""


def _png(path: Path, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)


def _concepts(names: list[str]) -> str:
    return "".join(f"<li>{name}</li>" for name in names)


def _masks(paths: list[str]) -> str:
    return "".join(f'<img src="../{p}" alt="mask" width="16" height="16">' for p in paths)


def write_batch(
    root: Path,
    name: str = "tb",
    n_items: int = 4,
    catch: dict[int, list[int]] | None = None,
    experiment: str = "method-vs-method",
) -> Path:
    """Write batch `name` with `n_items` items under root/name and return its directory.

    `catch` maps an item index to its expected choices (those items become catch trials).
    Item i shows `robot_a = "first"` when i is even.
    """
    catch = catch or {}
    batch_dir = root / name
    (batch_dir / "pages").mkdir(parents=True, exist_ok=True)
    items = []
    for index in range(n_items):
        number = f"{index + 1:04d}"
        key = f"{name}-{number}"
        image = f"images/{number}.png"
        _png(batch_dir / image, (index * 20 % 256, 100, 150))
        sides = {}
        for side, colour in (("first", (255, 0, 0)), ("second", (0, 0, 255))):
            masks = [f"images/{number}-{side[0]}{k}.png" for k in range(2)]
            for mask in masks:
                _png(batch_dir / mask, colour)
            sides[side] = {
                "model": "world_resnet",
                "method": "ibd" if side == "first" else "cam",
                "class_name": "harbor",
                "concepts": ["boat", "water"] if side == "first" else ["harbor"],
                "masks": masks,
            }
        robot_a = "first" if index % 2 == 0 else "second"
        robot_b = "second" if robot_a == "first" else "first"
        is_catch = index in catch
        page = f"pages/{key}.html"
        fields = {
            "class_name": "harbor",
            "image": image,
            "a_concepts": _concepts(sides[robot_a]["concepts"]),
            "a_masks": _masks(sides[robot_a]["masks"]),
            "b_concepts": _concepts(sides[robot_b]["concepts"]),
            "b_masks": _masks(sides[robot_b]["masks"]),
        }
        html = PAGE
        for field, value in fields.items():
            html = html.replace(f"@{field}@", value)
        (batch_dir / page).write_text(html, encoding="utf-8")
        items.append(
            {
                "id": key,
                "kind": "catch" if is_catch else experiment,
                "image": image,
                "source_image": f"world/images/{number}.png",
                "class_index": 3,
                "class_name": "harbor",
                "first": sides["first"],
                "second": sides["second"],
                "robot_a": robot_a,
                "catch": (
                    {"type": "identical", "expected_choices": catch[index]} if is_catch else None
                ),
                "page": page,
            }
        )
    manifest = {
        "format": "hitgen-manifest-1",
        "batch": name,
        "experiment": experiment,
        "focus": {"method": "ibd", "model": "world_resnet"},
        "seed": 0,
        "version": "0.1.0",
        "created_with": "tests/hitserver/batchfixture.py",
        "skipped": [],
        "items": items,
    }
    (batch_dir / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    links = "".join(f'<li><a href="{item["page"]}">{item["id"]}</a></li>' for item in items)
    (batch_dir / "index.html").write_text(f"<!DOCTYPE html><ul>{links}</ul>", encoding="utf-8")
    with (batch_dir / "input.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["item_id", "image", "class_name", "page"])
        for item in items:
            writer.writerow([item["id"], item["image"], item["class_name"], item["page"]])
    return batch_dir
