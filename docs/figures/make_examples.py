"""Make the example figures in docs/figures from a demo's SIMULATED raters (no person rated).

    .venv/bin/python docs/figures/make_examples.py [--home IBD_HOME]

`make demo` (scripts/demo.sh) loads its Fig. 8 and Fig. 9 batches into
IBD_HOME/simulation.sqlite and has 40 simulated raters answer them (`hitserver simulate`: they
judge each explanation by the concept world's ground truth, docs/hitserver.md, "What the
simulated raters reward"). This runs `analysis plot --include-simulated` on that database with
the demo's exclusion settings (scripts/demo-exclusion.toml) and copies Fig. 8 and Fig. 9 here as
fig8_example.png and fig9_example.png. Every rating is flagged simulated, so the figures say
"SIMULATED" in their titles.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from analysis import cli

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--home",
        type=Path,
        default=Path(os.environ.get("IBD_HOME", ROOT / "ibd-data")),
        help="the demo's IBD_HOME (default: $IBD_HOME, else ./ibd-data)",
    )
    args = parser.parse_args()
    database = args.home / "simulation.sqlite"
    if not database.is_file():
        print(f"make_examples: no {database}: run `make demo` first", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        rc = cli.main(
            [
                "plot",
                "--db", f"sqlite:///{database}",
                "--include-simulated",
                "--config", str(ROOT / "scripts" / "demo-exclusion.toml"),
                "--out", tmp,
            ]
        )  # fmt: skip
        if rc:
            return rc
        for stem in ("fig8", "fig9"):
            shutil.copyfile(Path(tmp) / f"{stem}.png", HERE / f"{stem}_example.png")
            print(f"wrote {HERE / f'{stem}_example.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
