"""Real LSPET data (../shared/data/lspet): skipped when absent."""

import numpy as np
import pytest

from cvcore.datasets import load_pose_dataset
from pose.data import build_crop_cache, select_range


@pytest.mark.data
def test_lspet_crops_keep_joints(shared_data):
    ds = load_pose_dataset(shared_data / "lspet", "lspet")
    assert len(ds) == 9000 and ds.joint_names[9] == "left_shoulder"
    records = select_range(ds, 8001, 8010)
    assert records[0].file == "im08001.jpg"
    cache = build_crop_cache(records, (128, 128), 1.3, 48.0, context=1.0, cache_dir=None, progress=False)
    for i, rec in enumerate(records):
        vis = cache.visible[i]
        assert np.array_equal(vis, rec.visible)
        inside = cache.joints[i][vis]
        assert ((inside > -0.5) & (inside < 127.5)).all()  # margin 1.3 keeps every annotated joint in the crop
        assert np.allclose(cache.crop(i).to_original(inside), rec.joints[vis], atol=1e-3)


@pytest.mark.slow
@pytest.mark.data
def test_shipped_model_reproduces_its_recorded_validation_pck(shared_data, tmp_path):
    """The shipped fp16 model, re-evaluated on LSPET val, matches the PCK stored with it (fp32) within 1 point."""
    from cvcore.config import load_config
    from pose.estimator import load_model_file
    from pose.train import evaluate_pck, load_val_cache

    model, cfg, obj = load_model_file("lspet")
    cfg = load_config(type(cfg), data={**obj["config"], "data": {**obj["config"]["data"],
                                       "root": str(shared_data / "lspet"), "cache_dir": str(tmp_path)}})
    val, joint_names = load_val_cache(cfg, progress=False)
    result = evaluate_pck(model, val, joint_names)
    assert result["PCK@0.2"] == pytest.approx(obj["metrics"]["PCK@0.2"], abs=1.0)
