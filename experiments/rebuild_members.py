"""Rebuild every member of an export from its plan.json + weights.pt alone, and compare outputs.

    python experiments/rebuild_members.py runs/search/export

Runs in a process that loads no dataset and trains nothing: each member is
rebuilt by :func:`autocompress.export.rebuild` (``CompressionPlan.load(plan.json).build()``
with ``weights.pt`` loaded strictly), then run on the test images stored in its
``probe.pt``. Prints the largest difference to the exported model's logits per
member and exits non-zero when any exceeds 1e-5 or when a data or training
module was imported.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from autocompress.compress import PLAN_NAME
from autocompress.export.rebuild import PROBE_NAME, rebuild

ATOL = 1e-5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export_dir", type=Path)
    args = parser.parse_args()
    members = sorted(p.parent for p in args.export_dir.glob(f"trial-*/{PLAN_NAME}"))
    if not members:
        print(f"{args.export_dir}: no member folder with a {PLAN_NAME}", file=sys.stderr)
        return 2
    worst = 0.0
    for member in members:
        model = rebuild(member, check=False)  # the figure below is the check
        probe = torch.load(member / PROBE_NAME, map_location="cpu", weights_only=True)
        with torch.no_grad():
            diff = (model(probe["inputs"]) - probe["logits"]).abs().max().item()
        worst = max(worst, diff)
        print(f"{member.name}: {len(probe['inputs'])} probe images, max |logit diff| {diff:.2e}")
    loaded = sorted(m for m in sys.modules if m.startswith(("autocompress.data", "autocompress.train")))
    print(f"{len(members)} member(s) rebuilt; worst max |diff| {worst:.2e} (atol {ATOL:g}); "
          f"data/training modules imported: {loaded or 'none'}")
    return 0 if worst <= ATOL and not loaded else 1


if __name__ == "__main__":
    sys.exit(main())
