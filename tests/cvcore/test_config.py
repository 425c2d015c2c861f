from dataclasses import dataclass, field

import pytest
import yaml

from cvcore.config import ConfigError, apply_overrides, config_to_dict, load_config, save_config


@dataclass
class Optim:
    name: str = "sgd"
    lr: float = 0.001
    milestones: list[int] = field(default_factory=lambda: [10, 20])


@dataclass
class Model:
    widths: tuple[int, ...] = (32, 64)
    activation: str = "relu"
    dropout: float | None = None


@dataclass
class Cfg:
    seed: int = 0
    flip: bool = True
    optim: Optim = field(default_factory=Optim)
    model: Model = field(default_factory=Model)


def test_defaults_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("seed: 3\noptim:\n  lr: 0.1\nmodel:\n  widths: [8, 16, 32]\n")
    cfg = load_config(Cfg, p, ["optim.lr=1e-3", "flip=false", "model.dropout=0.5", "optim.milestones=[1, 2, 3]"])
    assert cfg.seed == 3 and cfg.flip is False
    assert cfg.optim.lr == pytest.approx(1e-3) and isinstance(cfg.optim.lr, float)
    assert cfg.optim.name == "sgd"  # default kept
    assert cfg.model.widths == (8, 16, 32)
    assert cfg.model.dropout == 0.5
    assert cfg.optim.milestones == [1, 2, 3]


def test_int_promoted_to_float_but_not_reverse():
    cfg = load_config(Cfg, data={"optim": {"lr": 1}})
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    with pytest.raises(ConfigError, match="seed"):
        load_config(Cfg, data={"seed": 1.5})


@pytest.mark.parametrize(
    "data, key",
    [
        ({"optim": {"lrr": 0.1}}, "optim.lrr"),
        ({"unknown": 1}, "unknown"),
        ({"optim": {"lr": "fast"}}, "optim.lr"),
        ({"flip": "yes please"}, "flip"),
        ({"model": {"widths": [1, "a"]}}, "model.widths[1]"),
        ({"optim": 3}, "optim"),
    ],
)
def test_rejections_name_the_key(data, key):
    with pytest.raises(ConfigError) as e:
        load_config(Cfg, data=data)
    assert key in str(e.value)


@pytest.mark.parametrize("override, key", [("optim.lrr=1", "optim.lrr"), ("seed=abc", "seed"), ("nokey", "nokey"),
                                           ("seed.x=1", "seed")])
def test_override_rejections(override, key):
    with pytest.raises(ConfigError) as e:
        apply_overrides(Cfg(), [override])
    assert key in str(e.value)


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(Cfg, bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("optim:\n  momentum: 0.9\n")
    with pytest.raises(ConfigError, match=r"wrong.yaml.*optim.momentum"):
        load_config(Cfg, wrong)
    with pytest.raises(ConfigError, match="missing.yaml"):
        load_config(Cfg, tmp_path / "missing.yaml")


def test_save_round_trip(tmp_path):
    cfg = load_config(Cfg, data={"seed": 7, "model": {"widths": [1, 2]}})
    path = save_config(cfg, tmp_path / "out" / "config.yaml")
    assert yaml.safe_load(path.read_text()) == config_to_dict(cfg)
    assert load_config(Cfg, path) == cfg


@dataclass
class Sized:
    size: tuple[int, float] = (4, 0.5)


def test_fixed_length_tuple_coerces_each_item_to_its_type():
    cfg = load_config(Sized, None, ["size=[8, 3]"])
    assert cfg.size == (8, 3.0) and isinstance(cfg.size[1], float)
    with pytest.raises(ConfigError, match=r"size\[0\]"):
        load_config(Sized, None, ["size=[1.5, 3]"])
    with pytest.raises(ConfigError, match="2 items"):
        load_config(Sized, None, ["size=[1, 2, 3]"])
