"""`gafu demo` (the README's main job) in a reduced form; the full-length run is in the slow tier."""
import re

import jax
import numpy as np
import pytest
from PIL import Image

from _tiny_generator import tiny_generator
from nets.cli import main
from nets.sampling import render, z_from_seeds
from nets.stylegan2 import preset, without_noise
from train.demo import demo_config

IMAGES = ("domains.png", "samples.png", "blend.png", "toonify.png")


def _check_report(out):
    text = (out / "report.md").read_text()
    assert re.findall(r"!\[([^\]]+)\]", text) == list(IMAGES)
    for name in IMAGES:
        with Image.open(out / name) as im:
            assert im.mode == "RGB" and min(im.size) >= 32
    with Image.open(out / "blend.png") as im:     # rows: A, r = 8, 16, 32, B; 8 seeds: 32 px cells shown 4x
        assert im.size == (2 + 8 * 130, 2 + 5 * 130)
    with Image.open(out / "toonify.png") as im:   # target | projection | toon
        assert im.size == (2 + 3 * 130, 2 + 130)
    assert (out / "train_A" / "ema" / "gafu.json").is_file() and (out / "train_B" / "ema" / "gafu.json").is_file()
    return text


def test_demo_pipeline_reduced(tmp_path):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--steps-a", "2", "--steps-b", "2", "--project-steps", "2"]
    assert main(args) == 0
    text = _check_report(out)
    assert "A after 2 steps" in text and "(2 steps, LPIPS" in text and "noise inputs off" in text
    assert main(args) == 2                      # an existing demo is not overwritten silently


@pytest.mark.slow
def test_demo_full(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    _check_report(out)


def test_demo_runs_share_one_compiled_step():
    """A's training and B's fine-tune differ only in run-level fields, so B reuses A's compiled step (which is
    keyed on the family section)."""
    base = demo_config(seed=3)
    run_a = base.replace(steps=3000, ckpt_every=3000, sample_every=3000)
    tune = base.replace(steps=300, ckpt_every=300, sample_every=300, init_from="/somewhere/train_A")
    assert run_a.hparams == tune.hparams and run_a != tune
    hp = base.hparams
    assert hp.model == preset("tiny") and base.seed == 3
    assert (hp.loss.pl_weight, hp.loss.style_mixing, hp.ada.enabled) == (0.0, 0.0, False)
    assert (hp.opt.g_lr, hp.opt.d_lr, hp.loss.r1_gamma) == (0.01, 0.01, 1.0)


def test_without_noise_zeroes_only_noise_strengths():
    g = tiny_generator(noise_strength=0.3)
    quiet = without_noise(g)
    flat = {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_flatten_with_path(quiet["params"])[0]}
    orig = {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_flatten_with_path(g["params"])[0]}
    noisy = [k for k in flat if "noise_strength" in k]
    assert len(noisy) == 7                          # b4.conv1 + two convs in each of b8, b16, b32
    assert all(float(flat[k]) == 0.0 and float(orig[k]) == np.float32(0.3) for k in noisy)
    assert all(flat[k] is orig[k] for k in flat if k not in noisy)
    assert quiet["buffers"] is g["buffers"]
    # With the noise off, 'const' and 'none' noise modes render the same images; with it on they differ.
    cfg, z = preset("tiny"), z_from_seeds([0, 1], 32)
    np.testing.assert_array_equal(render(cfg, quiet, z), render(cfg, quiet, z, noise_mode="none"))
    assert np.any(render(cfg, g, z) != render(cfg, g, z, noise_mode="none"))


SPADE_IMAGES = ("data.png", "paint_heldout.png", "paint_photo.png", "blend.png", "lerp.png")


def test_spade_demo_data_holds_faces_out_and_pairs_roughs_with_paintings():
    from datasets.sketch import rough_sketch
    from train.spade_demo import HELD_OUT, ROUGH_SIZE, VARIANTS, demo_config, demo_data

    d = demo_data()
    n_train = (100 - HELD_OUT) * VARIANTS
    assert d["a"].shape == d["b"].shape == d["rough"].shape == (n_train, 32, 32, 3)
    assert d["test_rough"].shape == d["test_a"].shape == (HELD_OUT, 32, 32, 3)
    np.testing.assert_array_equal(d["rough"][5], rough_sketch(d["a"][5], ROUGH_SIZE))
    held = {x.tobytes() for x in d["test_a"]}
    assert not held & {x.tobytes() for x in d["a"]}                          # held-out faces are never trained on
    cfg = demo_config()
    assert cfg.family == "spade" and cfg.hparams.model.rough_size == ROUGH_SIZE and cfg.hparams.loss.lambda_vgg == 0


@pytest.mark.slow
def test_spade_demo_reduced(tmp_path):
    out = tmp_path / "spade"
    assert main(["demo", "spade", "--out", str(out), "--steps-a", "2", "--steps-b", "2"]) == 0
    text = (out / "report.md").read_text()
    assert re.findall(r"!\[([^\]]+)\]", text) == list(SPADE_IMAGES)
    for name in SPADE_IMAGES:
        with Image.open(out / name) as im:
            assert im.mode == "RGB" and min(im.size) >= 128 * 3
    with Image.open(out / "blend.png") as im:     # rows: A, r = 2, 4, 8, 16, 32, B; 8 roughs: 130 px per cell
        assert im.size == (2 + 8 * 130, 2 + 7 * 130)
    assert "after 2 steps" in text


@pytest.mark.slow
def test_gnr_demo_reduced(tmp_path):
    """`gafu demo gnr` with 3 training steps: every output, the report's lines, the videos' frame counts."""
    from interp import video
    out = tmp_path / "gnr"
    assert main(["demo", "gnr", "--out", str(out), "--steps-a", "3"]) == 0
    text = (out / "report.md").read_text()
    assert re.findall(r"!\[([^\]]+)\]", text) == ["data.png", "styles.png", "consistency.png", "video_frames.png"]
    assert all(f"`{v}`" in text for v in ("clip.mp4", "toon_fixed.mp4", "toon_drift.mp4"))
    assert "after 3 steps" in text and "Temporal stability" in text
    with Image.open(out / "styles.png") as im:               # face + 8 styles, 32 px cells shown at 128
        assert im.size == (2 + 9 * 130, 2 + 130)
    for name in ("toon_fixed.mp4", "toon_drift.mp4"):
        info = video.probe(out / name)
        assert (info.frames, info.fps, info.width) == (36, 12.0, 32)
