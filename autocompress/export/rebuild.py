"""An exported member folder back into a model: its plan, its weights, and a check on its probe outputs.

Needs neither the data nor the reference model: ``plan.json`` builds the
structure (:class:`~autocompress.compress.CompressionPlan`), ``weights.pt``
overwrites every parameter and buffer, and ``probe.pt`` holds a few test
images with the logits the exported model gave them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from autocompress.compress import PLAN_NAME, CompressionPlan, PlanError
from autocompress.export.manifest import ExportError

WEIGHTS_NAME = "weights.pt"
PROBE_NAME = "probe.pt"
INFO_NAME = "candidate.json"


def save_probe(model: nn.Module, images: torch.Tensor, path: str | Path) -> Path:
    """``images`` and the logits ``model`` gives them, for :func:`rebuild` to compare against."""
    with torch.no_grad():
        logits = model(images)
    torch.save({"inputs": images.detach().clone(), "logits": logits.detach().clone()}, path)
    return Path(path)


def rebuild(member_dir: str | Path, *, check: bool = True) -> nn.Module:
    """The exported model of ``member_dir`` (a ``trial-NNNN/`` folder) as a trainable ``nn.Module``, in eval mode.

    Builds ``plan.json`` and loads ``weights.pt`` (strictly, ``weights_only=True``);
    no data is read and nothing is trained. With ``check``, its outputs on the
    probe images of ``probe.pt`` must match the exported model's (else
    :class:`ExportError`).
    """
    member_dir = Path(member_dir)
    plan_path, weights_path = member_dir / PLAN_NAME, member_dir / WEIGHTS_NAME
    if not weights_path.is_file():
        raise ExportError(f"{member_dir}: no {WEIGHTS_NAME} (not an exported member folder)")
    if not plan_path.is_file():
        raise ExportError(f"{member_dir}: no {PLAN_NAME}: the member was exported from a model given as a module, "
                          f"which no builder rebuilds; materialize the candidate of {INFO_NAME} on that model and "
                          f"load {WEIGHTS_NAME}")
    try:
        model = CompressionPlan.load(plan_path).build()
    except PlanError as exc:
        raise ExportError(str(exc)) from None
    try:
        model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    except Exception as exc:  # not a state dict, truncated, or shapes that are not the plan's
        raise ExportError(f"{weights_path}: does not load into the model of {plan_path}: {exc}") from None
    model.eval()
    probe_path = member_dir / PROBE_NAME
    if check and probe_path.is_file():
        probe = torch.load(probe_path, map_location="cpu", weights_only=True)
        with torch.no_grad():
            got = model(probe["inputs"])
        want = probe["logits"]
        if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=1e-5):
            diff = (got - want).abs().max().item() if got.shape == want.shape else float("nan")
            raise ExportError(f"{member_dir}: the rebuilt model does not reproduce the exported one's outputs on "
                              f"the probe images of {PROBE_NAME} (max |diff| {diff:.3g}): {WEIGHTS_NAME} and "
                              f"{PLAN_NAME} disagree")
    return model
