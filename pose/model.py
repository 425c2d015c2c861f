"""The combined pose model: part detector -> spatial model, with the heatmap codec (Tompson et al. 2014).

Training stages (``PoseModel.stage``):

* ``"part_detector"``: the part detector alone learns; loss = heatmap MSE of its output.
* ``"spatial_model"``: the part detector is frozen (eval mode, no gradients); the spatial model learns on its output.
* ``"joint"``: both learn; loss = MSE of the part detector + MSE of the spatial model.

With ``left_right_tolerant`` each training sample is scored against its annotation or against the annotation with
left and right joints exchanged, whichever the prediction fits better (the same choice for every loss of the
sample). LSPET's labels are crowd-sourced and a one-step spatial model cannot tell a consistent left/right exchange
from the truth (what it gains and costs on LSPET: pose/models/README.md).

In training ``model(batch)`` returns a dict of losses; in eval it returns heatmaps and decoded joints. Targets are
rendered from the batch's joints by the model's codec, the same object that decodes predictions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from cvcore.nn import build_loss
from pose.codec import HeatmapCodec, flip_permutation
from pose.part_detector import PartDetector
from pose.spatial_model import SpatialModel

__all__ = ["PoseModel", "STAGES"]

STAGES = ("part_detector", "spatial_model", "joint")


class PoseModel(nn.Module):
    """Part detector + optional spatial model + codec.

    Args:
        part_detector: images Tensor[N, 3, H, W] -> heatmaps Tensor[N, K, h, w].
        spatial_model: heatmaps -> heatmaps, or None (part detector only).
        codec: renders targets and decodes heatmaps (input size, stride, sigma).
        flip_pairs: (left, right) joint index pairs, used by the flip test.
        stage: one of :data:`STAGES`.
        left_right_tolerant: score each training sample against its annotation or its left/right exchange,
            whichever is lower (needs ``flip_pairs``).
    """

    def __init__(self, part_detector: PartDetector, spatial_model: SpatialModel | None, codec: HeatmapCodec,
                 flip_pairs: Sequence[tuple[int, int]] = (), stage: str = "part_detector",
                 left_right_tolerant: bool = False):
        super().__init__()
        self.part_detector = part_detector
        self.spatial_model = spatial_model
        self.codec = codec
        self.flip_pairs = [tuple(p) for p in flip_pairs]
        if left_right_tolerant and not self.flip_pairs:
            raise ValueError("left_right_tolerant needs the skeleton's flip_pairs (left/right joint pairs)")
        self.left_right_tolerant = left_right_tolerant
        self.loss = build_loss("heatmap_mse")
        self.stage = "part_detector"
        self.set_stage(stage)

    # ---------------------------------------------------------------------------------------------- stages
    def set_stage(self, stage: str) -> None:
        """Select which parts learn; freezes the part detector for ``"spatial_model"``."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage '{stage}' (choose from {', '.join(STAGES)})")
        if stage != "part_detector" and self.spatial_model is None:
            raise ValueError(f"stage '{stage}' needs a spatial model (model.spatial_model.enabled=true)")
        self.stage = stage
        frozen = stage == "spatial_model"
        for p in self.part_detector.parameters():
            p.requires_grad_(not frozen)
        if self.spatial_model is not None:
            for p in self.spatial_model.parameters():
                p.requires_grad_(stage != "part_detector")
        self.train(self.training)

    def train(self, mode: bool = True) -> PoseModel:
        super().train(mode)
        if self.stage == "spatial_model":
            self.part_detector.eval()  # frozen: batch-norm statistics stay fixed
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    # -------------------------------------------------------------------------------------------- forward
    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Train mode: ``batch`` with ``image`` uint8 Tensor[N, 3, H, W], ``joints`` Tensor[N, K, 2] (input px) and
        ``visible`` Tensor[N, K] -> dict of scalar losses. Eval mode: ``batch`` with ``image`` -> :meth:`predict`."""
        images = batch["image"]
        if not self.training:
            return self.predict(images)
        targets, weights = self.codec.encode(batch["joints"], batch["visible"])
        targets, weights = targets.to(images.device), weights.to(images.device)
        losses: dict[str, Tensor] = {}
        if self.stage == "spatial_model":
            with torch.no_grad():
                parts = self.part_detector(images)
        else:
            parts = self.part_detector(images)
        final = self.spatial_model(parts) if self.stage != "part_detector" else parts
        if self.left_right_tolerant:
            targets, weights = self.closer_labelling(final, targets, weights)
        if self.stage != "spatial_model":
            losses["part_detector"] = self.loss(parts, targets, weights)
        if self.stage != "part_detector":
            losses["spatial_model"] = self.loss(final, targets, weights)
        return losses

    @torch.no_grad()
    def closer_labelling(self, heatmaps: Tensor, targets: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
        """Per sample, the targets and weights as annotated or with left/right joints exchanged, whichever
        ``heatmaps`` Tensor[N, K, h, w] fit better (weighted squared error; ties keep the annotation)."""
        perm = torch.as_tensor(flip_permutation(targets.shape[1], self.flip_pairs), device=targets.device)
        swapped_t, swapped_w = targets[:, perm], weights[:, perm]

        def error(t: Tensor, w: Tensor) -> Tensor:
            diff = torch.where(w[:, :, None, None] > 0, heatmaps.float() - t, torch.zeros_like(t))
            return (w[:, :, None, None] * diff.pow(2)).sum(dim=(1, 2, 3))

        swap = error(swapped_t, swapped_w) < error(targets, weights)
        pick = swap[:, None, None, None]
        return torch.where(pick, swapped_t, targets), torch.where(swap[:, None], swapped_w, weights)

    def heatmaps(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """images Tensor[N, 3, H, W] -> (final heatmaps, part-detector heatmaps), each Tensor[N, K, h, w].
        The final heatmaps are the spatial model's output when it is present and has been trained."""
        parts = self.part_detector(images)
        final = self.spatial_model(parts) if self.uses_spatial_model else parts
        return final, parts

    @property
    def uses_spatial_model(self) -> bool:
        return self.spatial_model is not None and self.stage != "part_detector"

    @torch.no_grad()
    def predict(self, images: Tensor, flip_test: bool = False) -> dict[str, Tensor]:
        """images Tensor[N, 3, H, W] (uint8 or [0, 1] floats) ->
        ``{"heatmaps": [N, K, h, w], "part_heatmaps": [N, K, h, w], "joints": [N, K, 2] input px, "scores": [N, K]}``.
        With ``flip_test`` the heatmaps of the mirrored images (left/right swapped back) are averaged in."""
        final, parts = self.heatmaps(images)
        if flip_test:
            f_final, f_parts = self.heatmaps(images.flip(-1))
            final = 0.5 * (final + self.codec.flip_back(f_final, self.flip_pairs))
            parts = 0.5 * (parts + self.codec.flip_back(f_parts, self.flip_pairs))
        joints, scores = self.codec.decode(final)
        return {"heatmaps": final, "part_heatmaps": parts, "joints": joints, "scores": scores}
