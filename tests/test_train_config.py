"""Training config: presets, dotted overrides, config files, old config.json files, and `gafu train --dry-run`."""
import dataclasses
import json

import pytest

from nets import cli
from train.config import TrainConfig, apply_overrides, load_config, preset, presets


def test_presets_follow_the_reference_recipes():
    f, p256, tiny = (preset(n).hparams for n in ("config-f", "paper256", "tiny"))
    assert (preset("config-f").batch, f.loss.r1_gamma, f.opt.g_lr, f.ema.kimg, f.model.channel_base) == \
        (32, 10.0, 0.002, 10.0, 32768)
    assert (preset("paper256").batch, p256.loss.r1_gamma, p256.opt.d_lr, p256.ema.kimg, p256.model.resolution) == \
        (64, 1.0, 0.0025, 20.0, 256)
    assert (tiny.model.resolution, preset("tiny").batch, tiny.ema.rampup) == (32, 8, 0.05)
    assert {"tiny", "paper256", "config-f"} <= set(presets())
    for name in ("tiny", "paper256", "config-f"):   # the NV recipe: Adam (0, 0.99), lazy intervals, PL, mixing, ADA
        c = preset(name).hparams
        assert (c.opt.beta1, c.opt.beta2, c.loss.d_reg_every, c.loss.g_reg_every) == (0.0, 0.99, 16, 4)
        assert (c.loss.pl_weight, c.loss.pl_decay, c.loss.pl_batch_shrink, c.loss.style_mixing) == (2.0, 0.01, 2, 0.9)
        assert (c.ada.target, c.ada.interval) == (0.6, 4)
    with pytest.raises(ValueError, match="unknown training preset 'nope'"):
        preset("nope")


def test_dotted_overrides_parse_and_check_types():
    c = apply_overrides(preset("tiny"), ["loss.r1_gamma=2", "model.resolution=64", "ada.enabled=false",
                                         "ema.rampup=null", "init_from=runs/a", "opt.eps=1e-6", "batch=16"])
    h = c.hparams
    assert h.loss.r1_gamma == 2.0 and isinstance(h.loss.r1_gamma, float)
    assert (h.model.resolution, h.ada.enabled, h.ema.rampup, c.init_from, h.opt.eps, c.batch) == \
        (64, False, None, "runs/a", 1e-6, 16)
    with pytest.raises(ValueError, match="unknown config key 'loss.r2_gamma'"):
        apply_overrides(c, ["loss.r2_gamma=1"])
    with pytest.raises(ValueError, match="'batch' expects int; got 'big'"):
        apply_overrides(c, ["batch=big"])
    with pytest.raises(ValueError, match="'loss' is a section"):
        apply_overrides(c, ["loss=1"])
    with pytest.raises(ValueError, match="not of the form"):
        apply_overrides(c, ["batch"])
    with pytest.raises(ValueError, match="resolution must be a power of two"):
        apply_overrides(c, ["model.resolution=48"])
    with pytest.raises(ValueError, match="parallel must be"):
        apply_overrides(c, ["parallel=vmap"])
    with pytest.raises(ValueError, match="must be a finite number"):
        apply_overrides(c, ["loss.r1_gamma=NaN"])
    with pytest.raises(ValueError, match="neither a run field .* nor a field of the stylegan2 section"):
        apply_overrides(c, ["bogus=1"])
    with pytest.raises(ValueError, match="'finetune.init_from' is now the run-level 'init_from'"):
        apply_overrides(c, ["finetune.init_from=runs/a"])
    with pytest.raises(ValueError, match="unknown model family 'nope'"):
        apply_overrides(c, ["family=nope"])


def test_run_fields_and_the_family_section_are_one_namespace_in_json():
    c = apply_overrides(preset("tiny"), ["seed=3", "model.resolution=16"])
    d = c.to_dict()
    assert d["family"] == "stylegan2" and d["seed"] == 3 and d["model"]["resolution"] == 16
    assert set(d) == {f.name for f in dataclasses.fields(TrainConfig)} - {"hparams"} | \
        {f.name for f in dataclasses.fields(c.hparams)}
    # The compiled step is keyed on the section alone: run-level changes leave it equal (and hashed alike).
    other = apply_overrides(c, ["seed=4", "steps=7", "batch=64", "data=x", "init_from=y", "sample_every=0"])
    assert other.hparams == c.hparams and hash(other.hparams) == hash(c.hparams)


def test_a_config_json_written_before_the_family_seam_still_reads(tmp_path):
    """Old workdirs hold config.json without "family" and with finetune.init_from."""
    new = apply_overrides(preset("tiny"), ["init_from=runs/a", "seed=2"]).to_dict()
    old = {k: v for k, v in new.items() if k not in ("family", "init_from")}
    old["finetune"] = {**new["finetune"], "init_from": "runs/a"}
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert load_config(str(tmp_path / "config.json")).to_dict() == new


def test_config_files_round_trip(tmp_path):
    c = apply_overrides(preset("paper256"), ["seed=7", "ema.rampup=0.05"])
    (tmp_path / "c.json").write_text(json.dumps(c.to_dict()))
    assert load_config(str(tmp_path / "c.json")) == c
    (tmp_path / "mine.py").write_text(
        "from train.config import preset\n"
        "def get_config(arg):\n"
        "    return preset('tiny').replace(batch=int(arg or 4))\n")
    assert load_config(str(tmp_path / "mine.py:16")).batch == 16
    assert load_config(str(tmp_path / "mine.py")).batch == 4
    with pytest.raises(ValueError, match=r"unknown config keys \['loss.gamma'\] in LossConfig"):
        TrainConfig.from_dict({"loss": {"gamma": 1}})
    with pytest.raises(FileNotFoundError, match="missing.json does not exist"):
        load_config(str(tmp_path / "missing.json"))


def test_cli_dry_run_prints_the_resolved_config(tmp_path, capsys):
    rc = cli.main(["train", "--config", "tiny", "--workdir", str(tmp_path), "--data", "some/dir",
                   "--steps", "30", "--set", "loss.r1_gamma=0.5", "--dry-run"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["family"], out["data"], out["steps"], out["loss"]["r1_gamma"], out["model"]["resolution"]) == \
        ("stylegan2", "some/dir", 30, 0.5, 32)
    rc = cli.main(["train", "--workdir", str(tmp_path / "new"), "--dry-run"])
    assert rc == 2 and "--config is required" in capsys.readouterr().err
