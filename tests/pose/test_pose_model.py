"""Part detector, combined model, staged training semantics, missing joints."""

import pytest
import torch
import torch.nn.functional as F
from pose_helpers import tiny_config

from cvcore.datasets import LSP_FLIP_PAIRS, LSP_SKELETON
from pose.estimator import build_pose_model
from pose.part_detector import PartDetector, load_mobilenet_v2_first_conv


@pytest.mark.parametrize("banks,merge", [(1, "sum"), (2, "sum"), (3, "sum"), (2, "concat")])
def test_part_detector_shapes(banks, merge):
    net = PartDetector(14, stride=4, banks=banks, channels=(4, 4, 4), kernel_size=3, merge=merge,
                       head_kernel=3, head_channels=(8,))
    x = torch.randint(0, 255, (2, 3, 32, 48), dtype=torch.uint8)
    assert net(x).shape == (2, 14, 8, 12)
    assert len(net.banks) == banks


def test_part_detector_stride_8():
    net = PartDetector(3, stride=8, banks=2, channels=(4, 4, 4), kernel_size=3, head_kernel=3, head_channels=(4,))
    assert net(torch.rand(1, 3, 64, 32)).shape == (1, 3, 8, 4)


def test_mobilenet_v2_first_conv_matches_torchvision():
    """Folded batch norm: our conv (3x3 filters centred in 5x5) == torchvision's conv + BN at stride 1."""
    import torchvision

    from pose.part_detector import mobilenet_v2_weights_path

    ref = torchvision.models.mobilenet_v2()
    ref.load_state_dict(torch.load(mobilenet_v2_weights_path(), weights_only=True))
    ref.eval()
    conv = torch.nn.Conv2d(3, 16, 5, padding=2, bias=True)
    load_mobilenet_v2_first_conv(conv)
    x = torch.randn(1, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = ref.features[0][1](F.conv2d(x, ref.features[0][0].weight, padding=1))[:, :16]
        assert torch.allclose(conv(x), expected, atol=1e-4)


def _batch(n=4, size=32, seed=0, k=14):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randint(0, 255, (n, 3, size, size), dtype=torch.uint8, generator=g),
            "joints": torch.rand(n, k, 2, generator=g) * (size - 4) + 2,
            "visible": torch.rand(n, k, generator=g) > 0.2}


def _model(tmp_path, stage="part_detector"):
    torch.manual_seed(0)
    cfg = tiny_config(tmp_path, tmp_path)
    return build_pose_model(cfg, 14, LSP_SKELETON, LSP_FLIP_PAIRS, stage=stage)


def test_train_mode_returns_losses_per_stage(tmp_path):
    model = _model(tmp_path).train()
    batch = _batch()
    assert set(model(batch)) == {"part_detector"}
    model.set_stage("spatial_model")
    assert set(model(batch)) == {"spatial_model"}
    model.set_stage("joint")
    assert set(model(batch)) == {"part_detector", "spatial_model"}


def test_flip_test_averages_to_the_same_pose_for_a_mirror_consistent_network(tmp_path, monkeypatch):
    """``predict(flip_test=True)``: the heatmaps of the mirrored image, flipped back with left / right swapped,
    are averaged in; a network exact on the image and on its mirror gives back its own pose."""
    model = _model(tmp_path, "joint").eval()
    hm, _ = model.codec.encode(torch.rand(14, 2) * 28 + 2, torch.ones(14, dtype=torch.bool))
    mirrored = model.codec.flip_back(hm[None], model.flip_pairs)

    def heatmaps(images):  # the "network": the original's maps, or the mirror's (the marker pixel moved right)
        maps = hm[None] if images[0, 0, 0, 0] == 1 else mirrored
        return maps.expand(len(images), -1, -1, -1), maps.expand(len(images), -1, -1, -1)

    monkeypatch.setattr(model, "heatmaps", heatmaps)
    images = torch.zeros(1, 3, 32, 32)
    images[..., 0, 0] = 1
    plain, flipped = model.predict(images), model.predict(images, flip_test=True)
    torch.testing.assert_close(flipped["heatmaps"], plain["heatmaps"], rtol=0, atol=1e-6)
    torch.testing.assert_close(flipped["joints"], plain["joints"], rtol=0, atol=1e-4)
    assert not torch.allclose(mirrored[0], hm)  # the swap is not trivial


def test_eval_mode_returns_heatmaps_and_joints(tmp_path):
    model = _model(tmp_path, "joint").eval()
    out = model(_batch(n=3))
    assert out["heatmaps"].shape == (3, 14, 8, 8) and out["joints"].shape == (3, 14, 2)
    assert out["scores"].shape == (3, 14)


def test_overfits_one_small_batch(tmp_path):
    model = _model(tmp_path).train()
    batch = _batch(n=2, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = sum(model(batch).values())
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]


@pytest.mark.parametrize("stage", ["part_detector", "joint"])
def test_missing_joints_carry_no_loss_and_no_gradient(tmp_path, stage):
    model = _model(tmp_path, stage).train()
    outputs = []

    def keep(module, inputs, output):
        if output.requires_grad:
            output.retain_grad()
            outputs.append(output)

    # the heatmaps that the loss sees: part detector's (stage 1) or the spatial model's (joint; there the part
    # detector's map of a missing joint still feeds the other joints through the pairwise kernels, as it should)
    (model.part_detector if stage == "part_detector" else model.spatial_model).register_forward_hook(keep)
    batch = _batch(n=3, seed=2)
    batch["visible"][:] = True
    batch["visible"][1, 4] = False
    batch["visible"][2, 0] = False
    loss = sum(model(batch).values())
    loss.backward()
    grad = outputs[0].grad
    assert grad[1, 4].abs().max() == 0 and grad[2, 0].abs().max() == 0
    assert grad[0, 4].abs().max() > 0
    # the junk coordinates of a missing joint do not matter
    moved = {k: v.clone() for k, v in batch.items()}
    moved["joints"][1, 4] = torch.tensor([-50.0, 900.0])
    with torch.no_grad():
        a = {k: v.item() for k, v in model(batch).items()}
        b = {k: v.item() for k, v in model(moved).items()}
    assert a == pytest.approx(b, rel=1e-6)


def _swap_left_right(batch):
    """The batch with every left/right joint pair's labels exchanged (the image unchanged): a crowd worker's slip."""
    perm = list(range(14))
    for a, b in LSP_FLIP_PAIRS:
        perm[a], perm[b] = b, a
    return {**batch, "joints": batch["joints"][:, perm], "visible": batch["visible"][:, perm]}


@pytest.mark.parametrize("stage", ["part_detector", "spatial_model", "joint"])
def test_left_right_tolerant_loss_is_the_smaller_of_the_two_labellings_per_sample(tmp_path, stage):
    torch.manual_seed(0)
    cfg = tiny_config(tmp_path, tmp_path)
    plain = build_pose_model(cfg, 14, LSP_SKELETON, LSP_FLIP_PAIRS, stage="joint").train()
    batch = _batch(n=3, seed=4)
    batch["visible"][:] = True
    opt = torch.optim.Adam(plain.parameters(), lr=1e-2)
    for _ in range(40):  # fit the batch a little, so the heatmaps tell its left from its right
        opt.zero_grad()
        sum(plain(batch).values()).backward()
        opt.step()
    plain.set_stage(stage)
    tolerant = build_pose_model(cfg, 14, LSP_SKELETON, LSP_FLIP_PAIRS, stage=stage,
                                left_right_tolerant=True).train()
    tolerant.load_state_dict(plain.state_dict())
    for m in [*plain.modules(), *tolerant.modules()]:  # running statistics: every forward pass gives the same maps
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    batch = {k: torch.cat([v[:1], _swap_left_right(batch)[k][1:2], v[2:]]) for k, v in batch.items()}  # a slip
    swapped = _swap_left_right(batch)
    final_key = "part_detector" if stage == "part_detector" else "spatial_model"

    def alone(b, i):  # sample i's loss: the same batched forward pass, the other samples' joints unannotated
        return plain({**b, "visible": b["visible"] & (torch.arange(3) == i)[:, None]})[final_key]

    with torch.no_grad():
        got = tolerant(batch)
        picks = [swapped if alone(swapped, i) < alone(batch, i) else batch for i in range(3)]
        assert [p is swapped for p in picks] == [False, True, False]
        want = plain({k: torch.stack([p[k][i] for i, p in enumerate(picks)]) for k in batch})
        assert set(got) == set(want)
        for k in want:
            assert got[k].item() == pytest.approx(want[k].item(), rel=1e-6)
        assert got[final_key].item() < plain(batch)[final_key].item()
        # labelled mirrored throughout, the batch scores exactly as labelled
        assert tolerant(swapped)[final_key].item() == pytest.approx(got[final_key].item(), rel=1e-6)


def test_left_right_tolerant_picks_the_labelling_the_heatmaps_show(tmp_path):
    model = build_pose_model(tiny_config(tmp_path, tmp_path), 14, LSP_SKELETON, LSP_FLIP_PAIRS,
                             left_right_tolerant=True)
    batch = _batch(n=2, seed=5)
    targets, weights = model.codec.encode(batch["joints"], batch["visible"])
    swapped = _swap_left_right(batch)
    s_targets, s_weights = model.codec.encode(swapped["joints"], swapped["visible"])
    heatmaps = torch.stack([s_targets[0], targets[1]])  # sample 0 shows the mirrored labelling, sample 1 the given
    t, w = model.closer_labelling(heatmaps, targets, weights)
    assert torch.equal(t[0], s_targets[0]) and torch.equal(w[0], s_weights[0])
    assert torch.equal(t[1], targets[1]) and torch.equal(w[1], weights[1])
    with pytest.raises(ValueError, match="flip_pairs"):
        build_pose_model(tiny_config(tmp_path, tmp_path), 14, LSP_SKELETON, (), left_right_tolerant=True)


def test_spatial_stage_freezes_part_detector(tmp_path):
    model = _model(tmp_path, "spatial_model")
    model.train()
    assert not model.part_detector.training  # batch-norm statistics frozen too
    bn = next(m for m in model.part_detector.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    loss = sum(model(_batch()).values())
    loss.backward()
    assert all(p.grad is None for p in model.part_detector.parameters())
    assert all(p.grad is not None for p in model.spatial_model.parameters())
    assert torch.equal(bn.running_mean, before)


def test_unknown_stage_and_missing_spatial_model(tmp_path):
    model = _model(tmp_path)
    with pytest.raises(ValueError, match="unknown stage"):
        model.set_stage("everything")
    model.spatial_model = None
    with pytest.raises(ValueError, match="needs a spatial model"):
        model.set_stage("joint")


def _mobilenet_v2_reference():
    import torchvision

    from pose.part_detector import mobilenet_v2_weights_path

    ref = torchvision.models.mobilenet_v2()
    ref.load_state_dict(torch.load(mobilenet_v2_weights_path(), weights_only=True))
    return ref.eval()


@pytest.mark.parametrize("blocks,trunk_stride,width", [(4, 4, 24), (7, 8, 32)])
@pytest.mark.parametrize("banks", [1, 2])
def test_mobilenet_trunk_part_detector_shapes(blocks, trunk_stride, width, banks):
    """Heatmaps stay on the codec's stride-4 grid whatever the trunk's stride (stride-8 trunks are upsampled)."""
    net = PartDetector(14, stride=4, banks=banks, head_kernel=3, head_channels=(8,), trunk="mobilenet_v2",
                       trunk_blocks=blocks)
    assert net.banks[0].stride == trunk_stride and net.banks[0].out_channels == width
    assert net(torch.randint(0, 255, (2, 3, 64, 48), dtype=torch.uint8)).shape == (2, 14, 16, 12)


def test_mobilenet_trunk_finer_than_heatmap_stride_is_rejected():
    with pytest.raises(ValueError, match="finer than the heatmap stride"):
        PartDetector(14, stride=4, trunk="mobilenet_v2", trunk_blocks=2)
    with pytest.raises(ValueError, match="unknown trunk"):
        PartDetector(14, trunk="resnet")


@pytest.mark.parametrize("share", [False, True])
def test_mobilenet_trunk_loads_imagenet_weights_and_computes_torchvision_features(tmp_path, share):
    from pose.part_detector import MobileNetV2Trunk

    ref = _mobilenet_v2_reference()
    cfg = tiny_config(tmp_path, tmp_path, model={"part_detector": {"trunk": "mobilenet_v2", "trunk_blocks": 4,
                                                                   "pretrained": "mobilenet_v2", "share_banks": share,
                                                                   "head_kernel": 3, "head_channels": [8]}})
    net = build_pose_model(cfg, 14).part_detector.eval()
    assert len(net.banks) == (1 if share else 2)
    for bank in net.banks:
        assert isinstance(bank, MobileNetV2Trunk)
        assert torch.equal(bank.layers[3].conv[1][0].weight, ref.features[3].conv[1][0].weight)
        assert torch.equal(bank.layers[2].conv[0][1].running_var, ref.features[2].conv[0][1].running_var)
        x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            assert torch.allclose(bank(x), ref.features[:4](x), atol=1e-5)
    # without pretrained weights (or when a model file is about to be loaded) the trunk is not ImageNet's
    scratch = build_pose_model(cfg, 14, pretrained=False).part_detector
    assert not torch.equal(scratch.banks[0].layers[3].conv[1][0].weight, ref.features[3].conv[1][0].weight)


def test_mobilenet_trunk_gradients_reach_every_bank(tmp_path):
    cfg = tiny_config(tmp_path, tmp_path, model={"part_detector": {"trunk": "mobilenet_v2", "trunk_blocks": 4,
                                                                   "pretrained": "none", "head_kernel": 3,
                                                                   "head_channels": [8]}})
    model = build_pose_model(cfg, 14).train()
    sum(model(_batch()).values()).backward()
    for i, bank in enumerate(model.part_detector.banks):
        grads = [p.grad for p in bank.parameters()]
        assert all(g is not None for g in grads), i
        assert bank.layers[0][0].weight.grad.abs().sum() > 0, i  # down to the first conv of each bank
