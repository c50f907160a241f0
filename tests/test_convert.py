"""Checkpoint import/export (nets/convert*.py): synthetic rosinality / NVIDIA state dicts with the reference key
names and shapes (written here from rosinality's model.py and NVlabs' training/networks.py, independently of
nets/convert_keys.py), every leaf checked at
its path with its transpose, export -> import identity, and clear errors for bad files. No torch needed."""
from __future__ import annotations

import math
import re
import sys
from collections import Counter

import jax
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from nets import cli, convert, convert_io, modelfile
from nets.convert_io import ConvertError
from nets.convert_keys import FORMATS
from nets.stylegan2 import Generator, init_discriminator, init_generator, param_count, preset

TINY = preset("tiny")                       # 32 px, z = w = 32, 2 mapping layers, ch = min(512 // r, 32)
FIR = np.outer([1, 3, 3, 1], [1, 3, 3, 1]).astype(np.float32) / 64


def ch(r: int) -> int:
    return min(TINY.channel_base // r, TINY.channel_max)


def _put(sd: dict, rng: np.random.Generator, key: str, *shape: int) -> None:
    sd[key] = rng.standard_normal(shape).astype(np.float32)


def ros_state_dict(seed: int = 0) -> dict[str, np.ndarray]:
    """rosinality Generator(32, 32, n_mlp=2) + Discriminator(32) state dicts, widths of the tiny preset."""
    rng, sd, w = np.random.default_rng(seed), {}, TINY.w_dim
    put = lambda k, *s: _put(sd, rng, k, *s)  # noqa: E731
    for i in (1, 2):
        put(f"g_ema/style.{i}.weight", w, w), put(f"g_ema/style.{i}.bias", w)
    put("g_ema/input.input", 1, ch(4), 4, 4)

    def styled(p, i, o, up):
        put(f"{p}.conv.weight", 1, o, i, 3, 3), put(f"{p}.conv.modulation.weight", i, w)
        put(f"{p}.conv.modulation.bias", i), put(f"{p}.noise.weight", 1), put(f"{p}.activate.bias", o)
        if up:
            sd[f"{p}.conv.blur.kernel"] = FIR * 4

    def torgb(p, i, up):
        put(f"{p}.conv.weight", 1, 3, i, 1, 1), put(f"{p}.conv.modulation.weight", i, w)
        put(f"{p}.conv.modulation.bias", i), put(f"{p}.bias", 1, 3, 1, 1)
        if up:
            sd[f"{p}.upsample.kernel"] = FIR * 4

    styled("g_ema/conv1", ch(4), ch(4), False), torgb("g_ema/to_rgb1", ch(4), False)
    prev = ch(4)
    for j, r in enumerate((8, 16, 32)):
        styled(f"g_ema/convs.{2 * j}", prev, ch(r), True), styled(f"g_ema/convs.{2 * j + 1}", ch(r), ch(r), False)
        torgb(f"g_ema/to_rgbs.{j}", ch(r), True)
        prev = ch(r)
    for i in range(7):
        r = 2 ** ((i + 5) // 2)
        put(f"g_ema/noises.noise_{i}", 1, 1, r, r)
    put("latent_avg", w)
    put("d/convs.0.0.weight", ch(32), 3, 1, 1), put("d/convs.0.1.bias", ch(32))
    for i, r in enumerate((32, 16, 8), start=1):
        a, b, p = ch(r), ch(r // 2), f"d/convs.{i}"
        put(f"{p}.conv1.0.weight", a, a, 3, 3), put(f"{p}.conv1.1.bias", a)
        put(f"{p}.conv2.1.weight", b, a, 3, 3), put(f"{p}.conv2.2.bias", b), put(f"{p}.skip.1.weight", b, a, 1, 1)
        sd[f"{p}.conv2.0.kernel"], sd[f"{p}.skip.0.kernel"] = FIR, FIR
    c = ch(4)
    put("d/final_conv.0.weight", c, c + 1, 3, 3), put("d/final_conv.1.bias", c)
    put("d/final_linear.0.weight", c, c * 16), put("d/final_linear.0.bias", c)
    put("d/final_linear.1.weight", 1, c), put("d/final_linear.1.bias", 1)
    return sd


def nv_state_dict(seed: int = 1) -> dict[str, np.ndarray]:
    """NVIDIA stylegan2-ada-pytorch G_ema / D state dicts (unconditional, skip G, resnet D), tiny widths."""
    rng, sd, w = np.random.default_rng(seed), {}, TINY.w_dim
    put = lambda k, *s: _put(sd, rng, k, *s)  # noqa: E731
    for i in (0, 1):
        put(f"G_ema/mapping.fc{i}.weight", w, w), put(f"G_ema/mapping.fc{i}.bias", w)
    put("G_ema/mapping.w_avg", w)
    prev = None
    for r in (4, 8, 16, 32):
        p = f"G_ema/synthesis.b{r}"
        sd[f"{p}.resample_filter"] = FIR
        if r == 4:
            put(f"{p}.const", ch(4), 4, 4)
        for c, i in ([("conv1", ch(4))] if r == 4 else [("conv0", prev), ("conv1", ch(r))]):
            put(f"{p}.{c}.weight", ch(r), i, 3, 3), put(f"{p}.{c}.bias", ch(r)), put(f"{p}.{c}.noise_strength")
            put(f"{p}.{c}.noise_const", r, r), put(f"{p}.{c}.affine.weight", i, w), put(f"{p}.{c}.affine.bias", i)
            sd[f"{p}.{c}.resample_filter"] = FIR
        put(f"{p}.torgb.weight", 3, ch(r), 1, 1), put(f"{p}.torgb.bias", 3)
        put(f"{p}.torgb.affine.weight", ch(r), w), put(f"{p}.torgb.affine.bias", ch(r))
        prev = ch(r)
    for r in (32, 16, 8):
        a, b, p = ch(r), ch(r // 2), f"D/b{r}"
        sd[f"{p}.resample_filter"] = FIR
        if r == 32:
            put(f"{p}.fromrgb.weight", a, 3, 1, 1), put(f"{p}.fromrgb.bias", a)
            sd[f"{p}.fromrgb.resample_filter"] = FIR
        put(f"{p}.conv0.weight", a, a, 3, 3), put(f"{p}.conv0.bias", a)
        put(f"{p}.conv1.weight", b, a, 3, 3), put(f"{p}.conv1.bias", b), put(f"{p}.skip.weight", b, a, 1, 1)
        for c in ("conv0", "conv1", "skip"):
            sd[f"{p}.{c}.resample_filter"] = FIR
    c = ch(4)
    put("D/b4.conv.weight", c, c + 1, 3, 3), put("D/b4.conv.bias", c), sd.update({"D/b4.conv.resample_filter": FIR})
    put("D/b4.fc.weight", c, c * 16), put("D/b4.fc.bias", c), put("D/b4.out.weight", 1, c), put("D/b4.out.bias", 1)
    return sd


def leaf(tree: dict, path: str) -> np.ndarray:
    for k in path.split("/"):
        tree = tree[k]
    return tree


def n_leaves(tree: dict) -> int:
    return len(jax.tree.leaves(tree))


@pytest.fixture(scope="session")
def ros_sd():
    return ros_state_dict()


@pytest.fixture(scope="session")
def nv_sd():
    return nv_state_dict()


@pytest.fixture(scope="session")
def ros_imported(ros_sd):
    return convert.import_state_dict(ros_sd)


@pytest.fixture(scope="session")
def nv_imported(nv_sd):
    return convert.import_state_dict(nv_sd)


@pytest.fixture(scope="session")
def tiny_vars():
    return jax.tree.map(np.asarray, {"G": init_generator(TINY, jax.random.key(0)),
                                     "D": init_discriminator(TINY, jax.random.key(1))})


# ----------------------------------------------------------------------------------------------------------------
# Import: config and every leaf


@pytest.mark.parametrize("which", ["ros", "nv"])
def test_inferred_config_and_tree_match_our_model(which, ros_imported, nv_imported, tiny_vars):
    imp = ros_imported if which == "ros" else nv_imported
    assert imp.config == TINY
    assert jax.tree.structure(imp.variables) == jax.tree.structure(tiny_vars)
    shapes = jax.tree.map(lambda a: (a.shape, a.dtype), imp.variables)
    assert shapes == jax.tree.map(lambda a: (a.shape, a.dtype), tiny_vars)
    assert param_count(imp.variables["G"]["params"]) == param_count(tiny_vars["G"]["params"]) == 66_723


def test_ros_every_leaf_at_its_path(ros_sd, ros_imported):
    sd, v = ros_sd, ros_imported.variables
    checks = {}
    for i in (0, 1):
        checks[f"G/params/mapping/fc{i}/kernel"] = sd[f"g_ema/style.{i + 1}.weight"].T
        checks[f"G/params/mapping/fc{i}/bias"] = sd[f"g_ema/style.{i + 1}.bias"]
    checks["G/buffers/mapping/w_avg"] = sd["latent_avg"]
    checks["G/params/synthesis/b4/const"] = sd["g_ema/input.input"][0].transpose(1, 2, 0)
    layers = [("conv1", "b4/conv1", 0)]
    rgbs = [("to_rgb1", "b4/torgb")]
    for j, r in enumerate((8, 16, 32)):
        layers += [(f"convs.{2 * j}", f"b{r}/conv0", 2 * j + 1), (f"convs.{2 * j + 1}", f"b{r}/conv1", 2 * j + 2)]
        rgbs += [(f"to_rgbs.{j}", f"b{r}/torgb")]
    for src, dst, noise in layers:
        s, p = f"g_ema/{src}", f"G/params/synthesis/{dst}"
        checks[f"{p}/weight"] = sd[f"{s}.conv.weight"][0].transpose(2, 3, 1, 0)          # [1,O,I,k,k] -> HWIO
        checks[f"{p}/affine/kernel"] = sd[f"{s}.conv.modulation.weight"].T
        checks[f"{p}/affine/bias"] = sd[f"{s}.conv.modulation.bias"]
        checks[f"{p}/noise_strength"] = sd[f"{s}.noise.weight"][0]
        checks[f"{p}/bias"] = sd[f"{s}.activate.bias"]
        checks[f"G/buffers/synthesis/{dst}/noise_const"] = sd[f"g_ema/noises.noise_{noise}"][0, 0]
    for src, dst in rgbs:
        s, p = f"g_ema/{src}", f"G/params/synthesis/{dst}"
        checks[f"{p}/weight"] = sd[f"{s}.conv.weight"][0].transpose(2, 3, 1, 0)
        checks[f"{p}/affine/kernel"] = sd[f"{s}.conv.modulation.weight"].T
        checks[f"{p}/affine/bias"] = sd[f"{s}.conv.modulation.bias"]
        checks[f"{p}/bias"] = sd[f"{s}.bias"].reshape(3)
    checks["D/params/b32/fromrgb/weight"] = sd["d/convs.0.0.weight"].transpose(2, 3, 1, 0)
    checks["D/params/b32/fromrgb/bias"] = sd["d/convs.0.1.bias"]
    for i, r in enumerate((32, 16, 8), start=1):
        s, p = f"d/convs.{i}", f"D/params/b{r}"
        checks[f"{p}/conv0/weight"] = sd[f"{s}.conv1.0.weight"].transpose(2, 3, 1, 0)
        checks[f"{p}/conv0/bias"] = sd[f"{s}.conv1.1.bias"]
        checks[f"{p}/conv1/weight"] = sd[f"{s}.conv2.1.weight"].transpose(2, 3, 1, 0)
        checks[f"{p}/conv1/bias"] = sd[f"{s}.conv2.2.bias"]
        checks[f"{p}/skip/weight"] = sd[f"{s}.skip.1.weight"].transpose(2, 3, 1, 0)
    checks["D/params/b4/conv/weight"] = sd["d/final_conv.0.weight"].transpose(2, 3, 1, 0)
    checks["D/params/b4/conv/bias"] = sd["d/final_conv.1.bias"]
    checks["D/params/b4/fc/kernel"] = sd["d/final_linear.0.weight"].T      # both flatten NCHW: a plain transpose
    checks["D/params/b4/fc/bias"] = sd["d/final_linear.0.bias"]
    checks["D/params/b4/out/kernel"] = sd["d/final_linear.1.weight"].T
    checks["D/params/b4/out/bias"] = sd["d/final_linear.1.bias"]
    assert len(checks) == n_leaves(v)                                       # every leaf is checked
    for path, want in checks.items():
        np.testing.assert_array_equal(leaf(v, path), want, err_msg=path)


def test_nv_every_leaf_at_its_path(nv_sd, nv_imported):
    sd, v = nv_sd, nv_imported.variables
    checks = {"G/buffers/mapping/w_avg": sd["G_ema/mapping.w_avg"],
              "G/params/synthesis/b4/const": sd["G_ema/synthesis.b4.const"].transpose(1, 2, 0)}
    for i in (0, 1):
        checks[f"G/params/mapping/fc{i}/kernel"] = sd[f"G_ema/mapping.fc{i}.weight"].T
        checks[f"G/params/mapping/fc{i}/bias"] = sd[f"G_ema/mapping.fc{i}.bias"]
    for r in (4, 8, 16, 32):
        for c in (["conv1"] if r == 4 else ["conv0", "conv1"]) + ["torgb"]:
            s, p = f"G_ema/synthesis.b{r}.{c}", f"G/params/synthesis/b{r}/{c}"
            checks[f"{p}/weight"] = sd[f"{s}.weight"].transpose(2, 3, 1, 0)                 # OIHW -> HWIO
            checks[f"{p}/bias"] = sd[f"{s}.bias"]
            checks[f"{p}/affine/kernel"] = sd[f"{s}.affine.weight"].T
            checks[f"{p}/affine/bias"] = sd[f"{s}.affine.bias"]
            if c != "torgb":
                checks[f"{p}/noise_strength"] = sd[f"{s}.noise_strength"]
                checks[f"G/buffers/synthesis/b{r}/{c}/noise_const"] = sd[f"{s}.noise_const"]
    for r in (32, 16, 8):
        for c in (["fromrgb"] if r == 32 else []) + ["conv0", "conv1"]:
            checks[f"D/params/b{r}/{c}/weight"] = sd[f"D/b{r}.{c}.weight"].transpose(2, 3, 1, 0)
            checks[f"D/params/b{r}/{c}/bias"] = sd[f"D/b{r}.{c}.bias"]
        checks[f"D/params/b{r}/skip/weight"] = sd[f"D/b{r}.skip.weight"].transpose(2, 3, 1, 0)
    checks["D/params/b4/conv/weight"] = sd["D/b4.conv.weight"].transpose(2, 3, 1, 0)
    checks["D/params/b4/conv/bias"] = sd["D/b4.conv.bias"]
    for c in ("fc", "out"):
        checks[f"D/params/b4/{c}/kernel"] = sd[f"D/b4.{c}.weight"].T
        checks[f"D/params/b4/{c}/bias"] = sd[f"D/b4.{c}.bias"]
    assert len(checks) == n_leaves(v)
    for path, want in checks.items():
        np.testing.assert_array_equal(leaf(v, path), want, err_msg=path)


# ----------------------------------------------------------------------------------------------------------------
# Export


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_then_import_is_identity(fmt, tiny_vars):
    flat = convert.export_state_dict(tiny_vars, TINY, fmt)
    imp = convert.import_state_dict(flat)
    assert imp.meta["format"] == fmt and imp.config == TINY
    assert jax.tree.structure(imp.variables) == jax.tree.structure(tiny_vars)
    for a, b in zip(jax.tree.leaves(imp.variables), jax.tree.leaves(tiny_vars)):
        assert a.dtype == b.dtype and np.array_equal(a, b)


@pytest.mark.parametrize("which", ["ros", "nv"])
def test_import_then_export_reproduces_the_state_dict(which, ros_sd, nv_sd, ros_imported, nv_imported):
    """Keys (incl. the filter buffers torch's strict load_state_dict wants), shapes and values come back exactly."""
    sd, imp = (ros_sd, ros_imported) if which == "ros" else (nv_sd, nv_imported)
    out = convert.export_state_dict(imp.variables, imp.config, imp.meta["format"])
    assert set(out) == set(sd)
    for k in sd:
        assert out[k].shape == sd[k].shape and np.array_equal(out[k], sd[k]), k


def test_export_filter_buffers_have_reference_values(tiny_vars):
    ros = convert.export_state_dict(tiny_vars, TINY, "rosinality")
    np.testing.assert_allclose(ros["g_ema/convs.0.conv.blur.kernel"][:2, :2], [[4 / 64, 12 / 64], [12 / 64, 36 / 64]])
    assert ros["g_ema/to_rgbs.2.upsample.kernel"].sum() == pytest.approx(4.0)   # upsampling gain 4
    assert ros["d/convs.1.skip.0.kernel"].sum() == pytest.approx(1.0)
    assert ros["g_ema/conv1.noise.weight"].shape == (1,) and ros["g_ema/to_rgb1.bias"].shape == (1, 3, 1, 1)
    nv = convert.export_state_dict(tiny_vars, TINY, "nvidia")
    assert nv["G_ema/synthesis.b8.conv0.noise_strength"].shape == ()
    assert nv["D/b4.conv.resample_filter"].sum() == pytest.approx(1.0)


def test_ros_constructor_line():
    assert convert.ros_constructor(preset("config-f", resolution=256)) == \
        "Generator(size=256, style_dim=512, n_mlp=8, channel_multiplier=2)"
    assert convert.ros_constructor(preset("paper256")).endswith("channel_multiplier=1)")
    assert convert.ros_constructor(TINY) is None


def test_config_f_64_table_covers_the_reference_param_count():
    """ROS table at config-f 64 px (traced only): 27,032,600 G parameters, as the reference counts."""
    cfg = preset("config-f", resolution=64)
    shapes = convert.expected_shapes(cfg, with_d=False)
    leaves, fixed = convert.tables("rosinality", cfg, "g_ema", None)
    n = sum(math.prod(lf.src_shape(shapes[lf.dst])) for lf in leaves if lf.dst[1] == "params")
    assert n == 27_032_600
    # Entry counts of the real reference state dicts at 64 px (counted once from rosinality / NVlabs modules):
    # rosinality g_ema 99 + latent_avg, d 36; NVIDIA G_ema 106, D 46.
    counts = Counter()
    for fmt, g, d in (("rosinality", "g_ema", "d"), ("nvidia", "G_ema", "D")):
        leaves, fixed = convert.tables(fmt, cfg, g, d)
        counts.update(k.split("/")[0] for k in [lf.src for lf in leaves] + list(fixed))
    assert counts == {"g_ema": 99, "latent_avg": 1, "d": 36, "G_ema": 106, "D": 46}


# ----------------------------------------------------------------------------------------------------------------
# Config inference


@settings(deadline=None, max_examples=60)
@given(log_base=st.integers(9, 15), log_max=st.integers(4, 9), log_res=st.integers(3, 10))
def test_channel_table_inference_reproduces_the_table(log_base, log_max, log_res):
    base, cmax = 2 ** log_base, 2 ** log_max
    table = {2 ** k: min(base // 2 ** k, cmax) for k in range(2, log_res + 1)}
    if min(table.values()) < 1:
        return
    b, m = convert.infer_channel_table(table)
    assert {r: min(b // r, m) for r in table} == table


def test_overrides_apply_and_shape_fields_are_checked(ros_sd):
    imp = convert.import_state_dict(ros_sd, overrides=["conv_clamp=256", "mbstd_group_size=8"])
    assert imp.config.conv_clamp == 256 and imp.config.mbstd_group_size == 8
    with pytest.raises(ConvertError, match=r"key 'g_ema/style.1.weight': expected shape \(64, 32\), got \(32, 32\)"):
        convert.import_state_dict(ros_sd, overrides=["z_dim=32", "w_dim=64"])


def test_missing_latent_avg_is_estimated_from_the_mapping(ros_sd):
    sd = {k: v for k, v in ros_sd.items() if k != "latent_avg"}
    imp = convert.import_state_dict(sd, with_d=False)
    assert "estimated" in imp.meta["w_avg"] and "D" not in imp.variables
    w_avg = imp.variables["G"]["buffers"]["mapping"]["w_avg"]
    z = np.random.RandomState(convert.W_AVG_SEED).randn(convert.W_AVG_SAMPLES, TINY.z_dim).astype(np.float32)
    ws = Generator(TINY).apply(imp.variables["G"], z[:2000], method=Generator.map)          # [n,num_ws,w]
    assert w_avg.shape == (TINY.w_dim,)
    np.testing.assert_allclose(w_avg, np.asarray(ws[:, 0]).mean(0), atol=0.1 * float(np.std(ws)))


def test_bare_and_row_shaped_inputs(ros_sd, ros_imported):
    bare = {k[len("g_ema/"):]: v for k, v in ros_sd.items() if k.startswith("g_ema/")}
    bare["latent_avg"] = ros_sd["latent_avg"][None]                      # some tools save it as [1, w_dim]
    imp = convert.import_state_dict(bare)
    assert imp.meta["generator"] == "<bare state dict>" and "D" not in imp.variables
    for a, b in zip(jax.tree.leaves(imp.variables["G"]), jax.tree.leaves(ros_imported.variables["G"])):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------------------------------------------
# Errors


def test_missing_key_is_named_with_its_shape(ros_sd):
    sd = {k: v for k, v in ros_sd.items() if k != "g_ema/convs.3.conv.weight"}
    with pytest.raises(ConvertError, match=r"missing key 'g_ema/convs.3.conv.weight' \(expected shape "
                                           r"\(1, 32, 32, 3, 3\), for G/params/synthesis/b16/conv1/weight\)"):
        convert.import_state_dict(sd, path="x.npz")


def test_wrong_shape_names_key_and_both_shapes(nv_sd):
    sd = dict(nv_sd)
    sd["D/b16.skip.weight"] = np.zeros((32, 32, 3, 3), np.float32)
    with pytest.raises(ConvertError, match=r"key 'D/b16.skip.weight': expected shape \(32, 32, 1, 1\), "
                                           r"got \(32, 32, 3, 3\)"):
        convert.import_state_dict(sd)


def test_unexpected_keys_and_foreign_filters_are_errors(nv_sd):
    sd = dict(nv_sd)
    sd["G_ema/mapping.embed.weight"] = np.zeros((32, 10), np.float32)     # a conditional model
    sd["G_ema/synthesis.b8.resample_filter"] = np.ones((4, 4), np.float32) / 16
    with pytest.raises(ConvertError) as e:
        convert.import_state_dict(sd)
    assert "unexpected key 'G_ema/mapping.embed.weight' (32, 10)" in str(e.value)
    assert "'G_ema/synthesis.b8.resample_filter': resampling filter" in str(e.value)


def test_unknown_format_is_an_error():
    with pytest.raises(ConvertError, match="cannot tell the checkpoint format"):
        convert.import_state_dict({"foo/bar": np.zeros(3)}, path="odd.npz")


def test_export_rejects_a_tree_of_another_shape(tiny_vars):
    with pytest.raises(ConvertError, match=r"G/params/synthesis/b4/const: expected shape \(4, 4, 64\)"):
        convert.export_state_dict(tiny_vars, preset("tiny", channel_max=64), "rosinality")


def test_torch_files_without_torch_say_how_to_proceed(tmp_path, monkeypatch):
    p = tmp_path / "ckpt.pt"
    p.write_bytes(b"not really")
    monkeypatch.setitem(sys.modules, "torch", None)                   # import torch -> ImportError
    with pytest.raises(ConvertError, match=r"pip install 'gafu\[torch\]'"):
        convert_io.read_checkpoint(p)
    (tmp_path / "net.pkl").write_bytes(b"x")
    with pytest.raises(ConvertError, match="NVIDIA network pickles"):
        convert_io.read_checkpoint(tmp_path / "net.pkl")
    with pytest.raises(FileNotFoundError):
        convert_io.read_checkpoint(tmp_path / "absent.npz")


# ----------------------------------------------------------------------------------------------------------------
# Files and CLI


def test_cli_convert_export_round_trip(tmp_path, ros_sd, ros_imported, capsys):
    src = convert_io.write_npz(tmp_path / "ros.npz", ros_sd)
    assert cli.main(["convert", str(src), "--out", str(tmp_path / "m"), "--set", "conv_clamp=256"]) == 0
    assert "rosinality G (g_ema) + D (d); 32 px" in capsys.readouterr().out
    mf = modelfile.load_model(tmp_path / "m")
    assert mf.meta["format"] == "rosinality" and mf.meta["converted_from"] == str(src)
    assert mf.config["conv_clamp"] == 256 and mf.config["resolution"] == 32
    for a, b in zip(jax.tree.leaves(mf.variables), jax.tree.leaves(ros_imported.variables)):
        np.testing.assert_array_equal(a, b)
    assert cli.main(["export", str(tmp_path / "m"), "--out", str(tmp_path / "back.npz")]) == 0
    assert "rosinality layout" in capsys.readouterr().out
    back = convert_io.read_checkpoint(tmp_path / "back.npz")
    assert set(back) == set(ros_sd) and all(np.array_equal(back[k], ros_sd[k]) for k in ros_sd)
    # existing outputs are not replaced without --overwrite, and the error is printed, not raised
    assert cli.main(["export", str(tmp_path / "m"), "--out", str(tmp_path / "back.npz")]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("item, msg", [
    ("conv_clamp=abc", r"--set: config key 'conv_clamp' expects float; got 'abc'"),
    ("conv_clamp=NaN", r"--set: config key 'conv_clamp' must be a finite number; got nan"),
    ("mbstd_group_size=2.5", r"config key 'mbstd_group_size' expects int; got 2.5"),
    ("conv_clamps=1", r"unknown config key 'conv_clamps': StyleGAN2Config has no field 'conv_clamps'"),
    ("conv_clamp", r"override 'conv_clamp' is not of the form key.path=value"),
])
def test_cli_set_is_typed(tmp_path, ros_sd, capsys, item, msg):
    src = convert_io.write_npz(tmp_path / "ros.npz", ros_sd)
    assert cli.main(["convert", str(src), "--out", str(tmp_path / "m"), "--set", item]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gafu convert: error: ") and str(src) in err and re.search(msg, err), err
    assert not (tmp_path / "m").exists()


def test_cli_reports_a_bad_checkpoint_by_key(tmp_path, nv_sd, capsys):
    sd = {k: v for k, v in nv_sd.items() if k != "G_ema/synthesis.b32.torgb.bias"}
    src = convert_io.write_npz(tmp_path / "nv.npz", sd)
    assert cli.main(["convert", str(src), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "missing key 'G_ema/synthesis.b32.torgb.bias' (expected shape (3,)" in err and str(src) in err
    assert not (tmp_path / "m").exists()


def test_torch_state_dict_reads_like_the_npz(tmp_path, ros_sd):
    """With torch installed: a torch.save'd rosinality checkpoint (incl. its argparse flags) reads like the .npz."""
    torch = pytest.importorskip("torch")
    import argparse

    nested: dict = {"args": argparse.Namespace(size=32, n_mlp=2)}
    for k, v in ros_sd.items():
        group, _, key = k.rpartition("/")
        (nested.setdefault(group, {}) if group else nested)[key] = torch.from_numpy(v)
    torch.save(nested, tmp_path / "ros.pt")
    flat = convert_io.read_checkpoint(tmp_path / "ros.pt")
    assert set(flat) == set(ros_sd) and all(np.array_equal(flat[k], ros_sd[k]) for k in ros_sd)
