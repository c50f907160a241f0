"""nets.registry: a second, made-up family goes through `gafu blend` and `gafu sample` untouched; family and config
checks (one list of free fields for `gafu blend` and `gafu toonify`) name the files and fields at fault."""
from __future__ import annotations

import dataclasses
import functools
import re
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from interp import blend as B
from nets import cli, configs, images, modelfile, paths, registry, sampling
from nets.stylegan2 import init_generator, preset


# ---- a made-up family: blocks b4, b8 of conv + batch norm, a stem and a head outside them ------------------------

@dataclasses.dataclass(frozen=True)
class ToyConfig:
    z_dim: int = 8
    channels: int = 4
    momentum: float = 0.9                         # a training setting: may differ between blend parents
    BLEND_FREE_FIELDS: ClassVar[frozenset[str]] = frozenset({"momentum"})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ToyConfig":
        return configs.from_dict(cls, d)


class _Block(nn.Module):
    channels: int
    up: bool

    @nn.compact
    def __call__(self, x):
        if self.up:
            x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)                     # [N,2h,2w,C]
        x = nn.Conv(self.channels, (3, 3), name="conv")(x)
        return nn.relu(nn.BatchNorm(use_running_average=True, name="norm")(x))


class _Body(nn.Module):
    channels: int

    @nn.compact
    def __call__(self, x):
        for r in (4, 8):
            x = _Block(self.channels, up=r > 4, name=f"b{r}")(x)
        return x


class ToyGenerator(nn.Module):
    cfg: ToyConfig

    @nn.compact
    def __call__(self, z):                                                        # z [N,z_dim] -> [N,8,8,3]
        c = self.cfg.channels
        x = nn.Dense(4 * 4 * c, name="stem")(z).reshape(-1, 4, 4, c)
        x = _Body(c, name="body")(x)
        return jnp.tanh(nn.Conv(3, (1, 1), name="head")(x))


@functools.lru_cache(maxsize=None)
def _toy_fns(cfg: ToyConfig):
    """(jit(init), jit(apply)) per config: compiled once, not on every call (eagerly every op would compile)."""
    return jax.jit(ToyGenerator(cfg).init), jax.jit(ToyGenerator(cfg).apply)


def toy_init(cfg: ToyConfig, key) -> dict:
    return {"G": _toy_fns(cfg)[0](key, jnp.zeros((1, cfg.z_dim)))}


def toy_sample(cfg: ToyConfig, g_vars: dict, seeds, *, psi: float = 1.0, noise_mode: str = "const") -> np.ndarray:
    z = sampling.z_from_seeds(seeds, cfg.z_dim)
    return images.to_uint8(_toy_fns(cfg)[1](g_vars, z))


TOY = registry.Arch(name="toy", config_cls=ToyConfig, generator="G", scope=("params/body", "batch_stats/body"),
                    init=toy_init, sample=toy_sample, presets=lambda name, **kw: ToyConfig(**kw))
registry.register(TOY)


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def flat(tree) -> dict:
    return {paths.path_str(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.fixture(scope="module")
def toy_files(tmp_path_factory):
    """Two toy model files whose batch-norm statistics differ (as after training on two domains)."""
    d = tmp_path_factory.mktemp("toy")
    for i in (0, 1):
        v = jax.tree.map(np.asarray, toy_init(ToyConfig(momentum=0.9 + 0.05 * i), jax.random.key(i)))
        rng = np.random.default_rng(i)
        v["G"]["batch_stats"] = jax.tree.map(lambda x: np.abs(rng.standard_normal(x.shape)).astype(x.dtype) + 0.5,
                                             v["G"]["batch_stats"])
        modelfile.save_model(d / f"m{i}", v, ToyConfig(momentum=0.9 + 0.05 * i), arch="toy")
    return d


# ---- a second family through the CLI ---------------------------------------------------------------------------

def test_second_family_blends_and_samples_through_the_cli(toy_files, capsys, monkeypatch):
    monkeypatch.setenv("GAFU_NATIVE_SIZE", "1")           # figures at the toy models' 8 px, to compare
    d = toy_files
    lo, hi = (modelfile.load_model(d / f"m{i}").variables["G"] for i in (0, 1))
    rc, out, err = run(capsys, "blend", d / "m0", d / "m1", "--out", d / "swap", "--swap", 8,
                       "--figure", d / "fig.png", "--seeds", "0,1")
    assert rc == 0, err
    assert "rows: LOW, swap at 8, swap at 4, HIGH" in out
    mf = modelfile.load_model(d / "swap")
    assert mf.arch == "toy" and mf.config == ToyConfig().to_dict()                 # LOW's config
    got, fl, fh = flat(mf.variables["G"]), flat(lo), flat(hi)
    for k, v in got.items():                                                       # b8 from HIGH, rest from LOW
        np.testing.assert_array_equal(v, (fh if "/b8/" in k else fl)[k], err_msg=k)

    rc, _, err = run(capsys, "blend", d / "m0", d / "m1", "--out", d / "sched", "--schedule", "4=0.25,8=0.75")
    assert rc == 0, err
    got = flat(modelfile.load_model(d / "sched").variables["G"])
    for k, v in got.items():
        alpha = 0.75 if "/b8/" in k else 0.25                                      # globals follow b4
        if k.startswith("batch_stats/"):                                           # picked whole, never averaged
            np.testing.assert_array_equal(v, fh[k] if alpha > 0.5 else fl[k], err_msg=k)
        else:
            np.testing.assert_allclose(v, (1 - alpha) * fl[k] + alpha * fh[k], rtol=1e-5, atol=1e-7, err_msg=k)

    rc, out, err = run(capsys, "sample", "--model", d / "swap", "--seeds", "0-3", "--out", d / "s.png")
    assert rc == 0, err
    grid = np.asarray(Image.open(d / "s.png"))
    want = images.make_grid(toy_sample(ToyConfig(), mf.variables["G"], [0, 1, 2, 3]))
    np.testing.assert_array_equal(grid, want)
    fig = np.asarray(Image.open(d / "fig.png"))                                    # 4 rows x 2 seeds of 8 px
    assert fig.shape == (4 * 10 + 2, 2 * 10 + 2, 3)
    np.testing.assert_array_equal(fig[2:10, 2:10], toy_sample(ToyConfig(), lo, [0])[0])


def test_second_family_errors_name_files_and_families(toy_files, tmp_path, capsys):
    d = toy_files
    cfg = preset("tiny")
    sg = modelfile.save_model(tmp_path / "sg", {"G": init_generator(cfg, jax.random.key(0))}, cfg)
    rc, _, err = run(capsys, "blend", d / "m0", d / "m1", "--out", tmp_path / "x", "--toonify", 8)
    assert rc == 2 and "--toonify follows Pinkney's StyleGAN2 layer positions" in err and "use --swap R" in err
    rc, _, err = run(capsys, "blend", sg, d / "m0", "--out", tmp_path / "x", "--swap", 8)
    assert rc == 2 and re.search(r"sg is a StyleGAN2Config model and .*m0 a ToyConfig one", err), err
    photo = images.write_png(tmp_path / "photo.png", np.full((8, 8, 3), 128, np.uint8))
    rc, _, err = run(capsys, "toonify", photo, "--base", d / "m0", "--blended", sg, "--out", tmp_path / "t.png")
    assert rc == 2 and re.search(r"model file .*m0 holds a 'toy' model; this needs a 'stylegan2' one", err), err
    with pytest.raises(modelfile.ModelFileError, match=r"m1 holds a 'toy' model; this needs a 'stylegan2' one"):
        sampling.load_generator(d / "m1")
    assert not (tmp_path / "x").exists()


# ---- the registry itself ---------------------------------------------------------------------------------------

def test_get_load_and_register():
    assert registry.get("stylegan2").config_cls.__name__ == "StyleGAN2Config" and "toy" in registry.names()
    with pytest.raises(ValueError, match=r"unknown architecture 'cyclegan'; known: gnr, spade, stylegan2, toy"):
        registry.get("cyclegan")
    registry.register(TOY)                                                          # the same record: a no-op
    with pytest.raises(ValueError, match="'toy' is already registered"):
        registry.register(dataclasses.replace(TOY, generator="D"))
    sg = registry.get("stylegan2")
    assert sg.presets("tiny", resolution=16) == preset("tiny", resolution=16)
    # the plain tiny preset: its init and sampler programs are the ones the other tests compile too
    cfg = sg.presets("tiny")
    v = sg.init(cfg, jax.random.key(0))
    assert set(v) == {"G", "D"} and B.resolutions(v["G"], sg.scope) == (4, 8, 16, 32)
    assert sg.sample(cfg, v["G"], [0, 1]).shape == (2, 32, 32, 3)


def test_load_checks_the_header(tmp_path):
    cfg = preset("tiny")
    g = init_generator(cfg, jax.random.key(0))
    modelfile.save_model(tmp_path / "alien", {"G": g}, cfg, arch="stylegan3")
    with pytest.raises(modelfile.ModelFileError, match=r"alien has architecture 'stylegan3', which gafu does not "
                                                       r"know \(known: gnr, spade, stylegan2"):
        registry.load(tmp_path / "alien")
    modelfile.save_model(tmp_path / "typo", {"G": g}, {**cfg.to_dict(), "resolution": "32"})
    with pytest.raises(modelfile.ModelFileError, match=r"typo: invalid stylegan2 config in gafu.json: config key "
                                                       r"'resolution' expects int; got '32'"):
        registry.load_generator(tmp_path / "typo")
    modelfile.save_model(tmp_path / "d_only", {"D": {"params": {"w": np.zeros(2)}}}, cfg)
    with pytest.raises(modelfile.ModelFileError, match=r"d_only holds no stylegan2 generator 'G' \(entries \['D'\]\)"):
        registry.load_generator(tmp_path / "d_only", "stylegan2")
    arch, got, mf = registry.load(tmp_path / "d_only")
    assert arch.name == "stylegan2" and got == cfg and set(mf.variables) == {"D"}


def test_check_same_arch_names_parents_and_every_field():
    a = preset("tiny")
    registry.check_same_arch(a, preset("tiny", conv_impl="xla", fused_modconv=True, mbstd_group_size=8,
                                       mbstd_num_channels=2, w_avg_beta=0.9), ("A", "B"))
    with pytest.raises(ValueError, match=r"^A and B have different model configs \(channel_max: 32 vs 16, "
                                         r"w_dim: 32 vs 16\); only models of one architecture"):
        registry.check_same_arch(a, preset("tiny", w_dim=16, channel_max=16, conv_impl="xla"), ("A", "B"))
    registry.check_same_arch(ToyConfig(), ToyConfig(momentum=0.5), ("x", "y"))       # the toy's own free field
    with pytest.raises(ValueError, match=r"x and y have different model configs \(channels: 4 vs 2\)"):
        registry.check_same_arch(ToyConfig(), ToyConfig(channels=2), ("x", "y"))


# ---- one list of free fields for both commands ------------------------------------------------------------------

def test_blend_and_toonify_accept_parents_differing_in_free_fields(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GAFU_NATIVE_SIZE", "1")
    base_cfg = preset("tiny", conv_impl="xla")
    g = jax.tree.map(np.asarray, init_generator(preset("tiny"), jax.random.key(0)))
    base = modelfile.save_model(tmp_path / "base", {"G": g}, base_cfg)
    other = modelfile.save_model(tmp_path / "other", {"G": g}, preset("tiny", conv_impl="auto", mbstd_group_size=8))
    rc, _, err = run(capsys, "blend", base, other, "--out", tmp_path / "c", "--swap", 16)   # refused conv_impl before
    assert rc == 0, err
    assert modelfile.load_model(tmp_path / "c").config == base_cfg.to_dict()
    np.savez(tmp_path / "w.npz", w=np.zeros((1, base_cfg.num_ws, base_cfg.w_dim), np.float32))
    images.write_png(tmp_path / "photo.png", np.full((40, 40, 3), 128, np.uint8))
    rc, _, err = run(capsys, "toonify", tmp_path / "photo.png", "--base", base, "--transfer", other,   # refused
                     "--resolution", 8, "--no-align", "--latent", tmp_path / "w.npz",       # mbstd before
                     "--out", tmp_path / "t.png")
    assert rc == 0, err
    assert np.asarray(Image.open(tmp_path / "t.png")).shape == (36, 3 * 34 + 2, 3)
