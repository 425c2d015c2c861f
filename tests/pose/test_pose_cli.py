"""Model file round trip (weights_only), PoseEstimator, the `pose` CLI and a tiny staged `pose-train` run."""

import json

import numpy as np
import pytest
import torch
from pose_helpers import synthetic_pose, tiny_config

from cvcore.datasets import LSP_FLIP_PAIRS, LSP_JOINTS, LSP_SKELETON, read_poses, write_detections
from pose import PoseEstimator
from pose.cli import pose_main, train_main
from pose.estimator import build_pose_model, init_from_model_file, load_model_file, save_model_file


def _save_tiny_model(tmp_path, half=True, stage="joint"):
    torch.manual_seed(0)
    cfg = tiny_config(tmp_path, tmp_path)
    model = build_pose_model(cfg, 14, LSP_SKELETON, LSP_FLIP_PAIRS, stage=stage)
    with torch.no_grad():  # non-trivial batch-norm statistics, so a lost buffer would show
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    path = save_model_file(tmp_path / "model.pt", model, cfg, LSP_JOINTS, LSP_SKELETON, metrics={"PCK@0.2": 1.0},
                           half=half)
    return path, model.eval()


def _image_folder(tmp_path, n: int, ext: str):
    """``tmp_path/imgs`` holding ``p0.<ext>`` ... of :func:`_images`."""
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, img in enumerate(_images(n)):
        Image.fromarray(img).save(folder / f"p{i}.{ext}")
    return folder


def _images(n=3, seed=0):
    rng = np.random.default_rng(seed)
    return [synthetic_pose(rng)[0] for _ in range(n)]


@pytest.mark.parametrize("half", [False, True])
def test_save_load_round_trip_weights_only(tmp_path, half):
    path, model = _save_tiny_model(tmp_path, half=half)
    raw = torch.load(path, weights_only=True)
    assert raw["joint_names"] == list(LSP_JOINTS) and raw["stage"] == "joint"
    loaded, _, _ = load_model_file(path)
    x = torch.from_numpy(np.stack(_images())).permute(0, 3, 1, 2)
    x = torch.nn.functional.interpolate(x.float(), size=(32, 32)).to(torch.uint8)
    a, b = model.predict(x)["heatmaps"], loaded.predict(x)["heatmaps"]
    if half:
        ref = build_pose_model(loaded_cfg := load_model_file(path)[1], 14, LSP_SKELETON, LSP_FLIP_PAIRS, "joint")
        ref.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                             for k, v in model.state_dict().items()})
        assert torch.equal(ref.eval().predict(x)["heatmaps"], b)  # identical to the fp16-rounded weights
        assert loaded_cfg.data.input_size == (32, 32)
    else:
        assert torch.equal(a, b)


def test_init_from_model_file_copies_matching_weights(tmp_path):
    path, model = _save_tiny_model(tmp_path, half=False)
    cfg = load_model_file(path)[1]
    torch.manual_seed(1)
    fresh = build_pose_model(cfg, 14, LSP_SKELETON, LSP_FLIP_PAIRS, stage="joint")
    assert init_from_model_file(fresh, path) == []
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    # other joints (10 instead of 14): everything but the per-joint layers is copied, those stay fresh
    other = build_pose_model(cfg, 10, [], [], stage="joint")
    before = {k: v.clone() for k, v in other.state_dict().items()}
    kept = init_from_model_file(other, path)
    assert kept and all(other.state_dict()[k].shape != model.state_dict()[k].shape for k in kept)
    assert all(torch.equal(other.state_dict()[k], before[k]) for k in kept)
    copied = [k for k in before if k not in kept and k.startswith("part_detector.") and before[k].is_floating_point()]
    assert copied and all(torch.equal(other.state_dict()[k], model.state_dict()[k]) for k in copied)
    # a file whose spatial model was never trained (stage part_detector), or another graph: spatial model stays fresh
    pd_path, _ = _save_tiny_model(tmp_path / "pd", half=False, stage="part_detector")
    kept = init_from_model_file(build_pose_model(cfg, 14, LSP_SKELETON, LSP_FLIP_PAIRS, stage="joint"), pd_path)
    assert kept and all(k.startswith("spatial_model.") for k in kept)
    cfg_skel = load_model_file(path)[1]
    cfg_skel.model.spatial_model.graph = "skeleton"
    kept = init_from_model_file(build_pose_model(cfg_skel, 14, LSP_SKELETON, LSP_FLIP_PAIRS, stage="joint"), path)
    assert "spatial_model.neighbour_counts" in kept and "spatial_model.targets" in kept
    # another part-detector architecture: nothing fits
    cfg.model.part_detector.channels, cfg.model.part_detector.head_channels = [5, 7, 9], [6, 6]
    with pytest.raises(ValueError, match="none of its part-detector convolutions"):
        init_from_model_file(build_pose_model(cfg, 14, LSP_SKELETON, LSP_FLIP_PAIRS), path)


def test_estimator_predicts_in_original_pixels(tmp_path):
    path, _ = _save_tiny_model(tmp_path)
    est = PoseEstimator.load(path, device="cpu")
    image = _images(1)[0]
    whole = est.predict(image)
    assert whole.shape == (14, 3) and whole.dtype == np.float32
    # joints live inside the letterboxed image extent
    h, w = image.shape[:2]
    assert (whole[:, 0] >= -0.5 - 1e-3).all() and (whole[:, 0] <= w - 0.5 + 1e-3).all()
    boxed = est.predict(image, box=[20, 10, 60, 70])
    assert np.isfinite(boxed).all() and not np.allclose(boxed, whole)
    batch = est.predict_batch([image, image], [None, [20, 10, 60, 70]])
    assert np.allclose(batch[0], whole, atol=1e-4) and np.allclose(batch[1], boxed, atol=1e-4)
    with pytest.raises(FileNotFoundError, match="no such pose model file"):
        PoseEstimator.load(tmp_path / "nope.pt")


def test_pose_cli_writes_valid_json_and_skips_unreadable(tmp_path, capsys):
    path, _ = _save_tiny_model(tmp_path)
    folder = _image_folder(tmp_path, 3, "jpg")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    code = pose_main([str(folder), "--model", str(path), "--out", str(out), "--vis", "--json", "--quiet",
                      "--device", "cpu", "--detector", "none"])
    assert code == 3  # finished, one image skipped
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 3 and [s["file"] for s in summary["skipped"]] == ["broken.jpg"]
    names, images = read_poses(out / "poses.json")
    assert names == list(LSP_JOINTS) and list(images) == ["p0.jpg", "p1.jpg", "p2.jpg"]
    assert images["p1.jpg"].people[0].joints.shape == (14, 2)
    assert sorted(p.name for p in (out / "vis").iterdir()) == ["p0.jpg", "p1.jpg", "p2.jpg"]


def test_pose_cli_with_detection_boxes(tmp_path, capsys):
    path, _ = _save_tiny_model(tmp_path)
    folder = _image_folder(tmp_path, 2, "png")
    dets = tmp_path / "dets.json"
    write_detections(dets, ["person"], [
        {"file": "p0.png", "width": 88, "height": 72, "detections": [
            {"label": "person", "score": 0.9, "box": [10, 5, 50, 70]},
            {"label": "person", "score": 0.8, "box": [40, 5, 80, 70]}]},
        {"file": "p1.png", "width": 88, "height": 72, "detections": []}])
    assert pose_main([str(folder), "--model", str(path), "--out", str(tmp_path / "o"), "--boxes", str(dets),
                      "--quiet", "--device", "cpu"]) == 0
    _, images = read_poses(tmp_path / "o" / "poses.json")
    assert len(images["p0.png"].people) == 2 and len(images["p1.png"].people) == 0
    assert np.allclose(images["p0.png"].people[1].box, [40, 5, 80, 70])


def test_pose_cli_errors_are_one_line(tmp_path, capsys):
    assert pose_main([str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such folder or file" in err[0]


def test_pose_cli_resumes_and_shards_with_the_uninterrupted_output(tmp_path, capsys, monkeypatch):
    from pose.topdown import TopDown

    path, _ = _save_tiny_model(tmp_path)
    folder = _image_folder(tmp_path, 5, "png")
    common = ["--model", str(path), "--detector", "none", "--quiet", "--json", "--device", "cpu",
              "--batch-size", "1"]
    assert pose_main([str(folder), "--out", str(tmp_path / "whole"), *common]) == 0
    _, whole = read_poses(tmp_path / "whole" / "poses.json")

    original, calls = TopDown.estimate, {"n": 0}

    def crash_on_fourth(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(self, *a, **k)

    monkeypatch.setattr(TopDown, "estimate", crash_on_fourth)
    out = tmp_path / "out"
    assert pose_main([str(folder), "--out", str(out), *common]) == 130
    assert not (out / "poses.json").exists() and len((out / "poses.jsonl").read_text().splitlines()) == 4
    monkeypatch.setattr(TopDown, "estimate", original)
    capsys.readouterr()
    assert pose_main([str(folder), "--out", str(out), *common]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["resumed"], summary["processed"], summary["images"]) == (3, 2, 5)
    for i in (1, 0):
        assert pose_main([str(folder), "--out", str(tmp_path / "sharded"), *common, "--shard", f"{i}/2"]) == 0
    for result in (out / "poses.json", tmp_path / "sharded" / "poses.json"):
        _, images = read_poses(result)
        assert list(images) == list(whole)
        for name, image in images.items():
            np.testing.assert_allclose(image.people[0].joints, whole[name].people[0].joints, atol=1e-4)


def _tiny_train_args(lspet_root, tmp_path) -> list[str]:
    overrides = [f"{k}={json.dumps(v)}" for k, v in {
        "data.root": str(lspet_root), "data.train_range": [1, 8], "data.val_range": [9, 12],
        "data.input_size": [32, 32], "data.margin": 1.4, "data.min_crop": 16.0, "data.min_visible": 4,
        "data.context": 1.25, "data.cache_dir": str(tmp_path / "cache"), "train.out_dir": str(tmp_path / "run"),
        "train.batch_size": 4, "train.checkpoint_every": 1, "train.eval_limit": 4, "train.device": "cpu",
        "model.part_detector.channels": [4, 8, 8], "model.part_detector.kernel_size": 3,
        "model.part_detector.head_kernel": 3, "model.part_detector.head_channels": [8, 8],
        "model.spatial_model.kernel_size": 9,
    }.items()]
    return ["--config", "/dev/null", "--quiet", "--json", *overrides]


def test_pose_train_stages_resume_and_write_model(lspet_root, tmp_path, capsys):
    args = _tiny_train_args(lspet_root, tmp_path)
    assert train_main([*args, "--stages", "part_detector"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert list(first) == ["part_detector"] and 0 <= first["part_detector"]["PCK@0.2"] <= 100
    assert train_main(args) == 0  # part detector is done and skipped; the two other stages run
    results = json.loads(capsys.readouterr().out)
    assert list(results) == ["part_detector", "spatial_model", "joint"]
    assert results["part_detector"] == first["part_detector"]
    run = tmp_path / "run"
    for stage in ("part_detector", "spatial_model", "joint"):
        assert (run / stage / "done.json").is_file() and (run / stage / "log.jsonl").is_file()
    est = PoseEstimator.load(run / "model.pt", device="cpu")
    assert est.model.stage == "joint" and (run / "config.yaml").is_file() and (run / "pck.md").is_file()
    # train.init_from: a missing model file is a clear error naming it
    assert train_main([*args, f"train.init_from={tmp_path / 'missing.pt'}"]) != 0
    assert "missing.pt" in capsys.readouterr().err
    # ... and an existing one starts the stages from its weights, its trained spatial model included (lr ~0: the
    # convolution and spatial weights stay exactly the file's instead of a fresh or identity initialisation)
    again = [a if not a.startswith("train.out_dir=") else f"train.out_dir={tmp_path / 'again'}" for a in args]
    assert train_main([*again, f"train.init_from={run / 'model.pt'}", "train.part_detector.lr=1e-12",
                       "train.spatial_model.lr=1e-12", "train.joint.epochs=0"]) == 0
    capsys.readouterr()
    src, out = torch.load(run / "model.pt", weights_only=True), torch.load(tmp_path / "again" / "model.pt",
                                                                           weights_only=True)
    for k, v in src["state_dict"].items():
        if v.dim() >= 2 or k.startswith("spatial_model."):
            assert torch.equal(out["state_dict"][k], v), k
    import hashlib  # the model file records where it started from

    assert out["init_from"] == {"path": str(run / "model.pt"),
                                "sha256": hashlib.sha256((run / "model.pt").read_bytes()).hexdigest()}


@pytest.mark.slow
def test_pose_train_under_torchrun_equals_one_process_with_the_same_global_batch(lspet_root, tmp_path, capsys):
    """``torchrun -m pose.train``, two CPU ranks (gloo) of batch 4 against one process of batch 8 on the same 8 crops
    (one step per epoch, no augmentation, no BatchNorm, so the global batches are the same crops): every stage runs
    (rank 1 starts a stage only after rank 0 wrote the previous one: no checkpoint until a stage ends), the logged
    losses (averaged over the ranks) agree to 1e-4 relative (float32 sums in another order), and the validation PCK
    gathered from both ranks equals the single process's."""
    import subprocess
    import sys

    same = ["augment.enabled=false", "model.part_detector.norm=none", "train.checkpoint_every=1000",
            "train.log_every=1", "train.part_detector.epochs=4", "train.spatial_model.epochs=2", "train.joint.epochs=2"]
    args = _tiny_train_args(lspet_root, tmp_path)
    one = [a for a in args if not a.startswith(("train.out_dir=", "train.batch_size="))]
    assert train_main([*one, *same, f"train.out_dir={tmp_path / 'one'}", "train.batch_size=8"]) == 0
    single = json.loads(capsys.readouterr().out)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                        "29531", "-m", "pose.train", *one, *same, f"train.out_dir={tmp_path / 'two'}",
                        "train.batch_size=4"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads(r.stdout.strip().splitlines()[-1])
    assert list(results) == ["part_detector", "spatial_model", "joint"]
    assert results == single
    for stage in results:
        def losses(run, stage=stage):
            lines = (tmp_path / run / stage / "log.jsonl").read_text().splitlines()
            return [(d["step"], d["loss"]) for d in map(json.loads, lines) if "loss" in d]

        a, b = losses("one"), losses("two")
        assert [s for s, _ in a] == [s for s, _ in b] and len(a) >= 2
        np.testing.assert_allclose([v for _, v in b], [v for _, v in a], rtol=1e-4)
    est = PoseEstimator.load(tmp_path / "two" / "model.pt", device="cpu")
    assert est.model.stage == "joint"


def test_pose_maps_a_reduced_decode_of_a_large_image_back_to_its_pixels(tmp_path, monkeypatch, capsys):
    from PIL import Image

    import cvcore.io

    path, _ = _save_tiny_model(tmp_path)
    small = _images(1)[0]
    h, w = small.shape[:2]
    folder = tmp_path / "big"
    folder.mkdir()
    Image.fromarray(np.repeat(np.repeat(small, 4, 0), 4, 1)).save(folder / "big.png")
    monkeypatch.setattr(cvcore.io, "WORKING_PIXELS", h * w)
    est = PoseEstimator.load(path, device="cpu")
    box = np.array([5.0, 4.0, 40.0, 50.0], np.float32)
    dets = tmp_path / "dets.json"
    write_detections(dets, ["person"], [{"file": "big.png", "width": 4 * w, "height": 4 * h, "detections": [
        {"label": "person", "score": 1.0, "box": (box * 4).tolist()}]}])
    for extra, expected in ((["--detector", "none"], est.predict(small)), (["--boxes", str(dets)],
                                                                         est.predict(small, box))):
        out = tmp_path / extra[0]
        assert pose_main([str(folder), "--model", str(path), "--out", str(out), "--quiet", "--device", "cpu",
                          *extra]) == 0
        _, images = read_poses(out / "poses.json")
        person = images["big.png"].people[0]
        assert (images["big.png"].width, images["big.png"].height) == (4 * w, 4 * h)
        np.testing.assert_allclose(person.joints, (expected[:, :2] + 0.5) * 4 - 0.5, atol=1e-3)
    np.testing.assert_allclose(est.predict(folder / "big.png", box * 4)[:, :2],
                               (est.predict(small, box)[:, :2] + 0.5) * 4 - 0.5, atol=1e-3)
