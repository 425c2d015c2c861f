"""Heatmap codec: encode -> decode round trip, the pixel-centre convention, and the flip test."""

import pytest
import torch

from cvcore.datasets import LSP_FLIP_PAIRS
from pose.codec import HeatmapCodec, flip_permutation


# per-axis bounds: arg-max alone is off by up to half a cell (s/2 px), the quarter shift by up to s/4 px
@pytest.mark.parametrize("refine,tol", [("dark", 0.05), ("quarter", 1.0 + 1e-4), (None, 2.0 + 1e-4)])
def test_round_trip_subpixel(refine, tol):
    g = torch.Generator().manual_seed(0)
    codec = HeatmapCodec((128, 96), stride=4, sigma=1.5, refine=refine)
    # sub-pixel positions away from the border (refinement needs both neighbours)
    joints = torch.stack([torch.rand(200, generator=g) * 100 + 14, torch.rand(200, generator=g) * 70 + 13], -1)
    heatmaps, weights = codec.encode(joints[None], torch.ones(1, 200, dtype=torch.bool))
    assert heatmaps.shape == (1, 200, 24, 32) and bool((weights == 1).all())
    coords, scores = codec.decode(heatmaps)
    err = (coords[0] - joints).abs()
    assert err.max() < tol, f"{refine}: max error {err.max():.3f} px"
    assert bool((scores > 0.5).all())


def test_dark_round_trip_well_under_one_pixel_at_stride_8():
    codec = HeatmapCodec((64, 64), stride=8, sigma=1.0, refine="dark")
    joints = torch.tensor([[20.3, 30.7], [33.9, 25.1], [40.49, 41.51]])
    coords, _ = codec.decode(codec.encode(joints, torch.ones(3, dtype=torch.bool))[0])
    assert (coords - joints).abs().max() < 0.1


def test_pixel_centre_convention():
    """Cell u at stride s is centred on input x = u*s + (s-1)/2: a joint there peaks exactly in that cell."""
    s = 4
    codec = HeatmapCodec((32, 32), stride=s, sigma=1.0, refine=None)
    u, v = 3, 5
    joint = torch.tensor([[u * s + (s - 1) / 2, v * s + (s - 1) / 2]])
    hm, _ = codec.encode(joint, torch.tensor([True]))
    assert hm[0, v, u] == pytest.approx(1.0)
    coords, _ = codec.decode(hm)
    assert torch.equal(coords[0], joint[0])


def test_missing_and_outside_joints_get_zero_weight_and_empty_maps():
    codec = HeatmapCodec((32, 32), stride=4, sigma=1.0)
    joints = torch.tensor([[10.0, 10.0], [-5.0, 3.0], [12.0, 12.0]])
    visible = torch.tensor([True, True, False])
    hm, w = codec.encode(joints, visible)
    assert w.tolist() == [1.0, 0.0, 0.0]
    assert hm[1].abs().sum() == 0 and hm[2].abs().sum() == 0 and hm[0].max() > 0.5


def test_flip_back_matches_encoding_of_mirrored_joints():
    """Heatmaps of a mirrored pose, flipped back, equal the heatmaps of the original pose (left/right swapped)."""
    g = torch.Generator().manual_seed(1)
    w_in = 64
    codec = HeatmapCodec((w_in, 48), stride=4, sigma=1.2)
    joints = torch.rand(14, 2, generator=g) * torch.tensor([60.0, 44.0]) + 2
    visible = torch.ones(14, dtype=torch.bool)
    perm = flip_permutation(14, LSP_FLIP_PAIRS)
    mirrored = joints[perm].clone()
    mirrored[:, 0] = w_in - 1 - mirrored[:, 0]  # integer coordinates are pixel centres
    original, _ = codec.encode(joints, visible)
    flipped, _ = codec.encode(mirrored, visible)
    back = HeatmapCodec.flip_back(flipped[None], LSP_FLIP_PAIRS)[0]
    assert torch.allclose(back, original, atol=1e-6)


def test_flip_permutation_swaps_lsp_pairs():
    perm = flip_permutation(14, LSP_FLIP_PAIRS)
    assert sorted(perm) == list(range(14))
    assert perm[0] == 5 and perm[5] == 0  # right ankle <-> left ankle
    assert perm[8] == 9 and perm[12] == 12 and perm[13] == 13  # shoulders swap, neck and head stay


def test_input_size_must_be_multiple_of_stride():
    with pytest.raises(ValueError, match="multiple of the stride"):
        HeatmapCodec((30, 32), stride=4, sigma=1.0)
