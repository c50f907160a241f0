"""GANs N' Roses behind the training seam: the losses on hand-computed cases, the content-group layout, the
augmentation, one step on 8 devices == on 1, a tiny run whose losses move the right way, exact resume, the export
(both EMA generators, previews, registry), and `gafu train` on a prepared two-domain dataset.
One tiny config (16 px, batch 32: one content group on each of the 8 test devices), so every run shares one
compiled step. The 8-vs-1 device step compiles two more programs (~1 min each), and exact resume and fine-tuning
run the loop twice more: they are in the slow tier."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from datasets.demo import photo_domain
from datasets.pipeline import ArraySource
from datasets.styles import styled_domain
from nets import gnr, registry
from train.ckpt import Checkpoints, abstract_state, state_to_tree
from train.config import apply_overrides, preset
from train.gnr import losses as L
from train.gnr.augment import NUM_UNIFORM, augment
from train.gnr.config import AugConfig
from train.gnr.step import grouped
from train.logs import read_metrics
from train.loop import run
from train.parallel import build_step, make_mesh, put_batch, put_replicated, replicated, to_host

QUIET = dict(progress=False, log=lambda s: None)
TINY = ["model.resolution=16", "model.num_down=2", "model.channel_base=128", "model.channel_max=16",
        "model.style_dim=16", "model.n_mlp=2", "model.local_res=4", "model.global_res=4",
        "model.diversity_features=8", "model.latent_d_width=16", "loss.lambda_lpips=0", "loss.r1_every=4",
        "batch=32", "log_every=5", "keep=2", "sample_seeds=4", "opt.ema=0.9"]


def config(*extra: str):
    return apply_overrides(preset("gnr-tiny"), TINY + list(extra))


@pytest.fixture(scope="module")
def domains():
    a = photo_domain(16, variants=1)[:40]
    b, _ = styled_domain(16, variants=1)
    return {"trainA": ArraySource(a), "trainB": ArraySource(b[:40])}


# ---- losses -----------------------------------------------------------------------------------------------------

def test_adversarial_terms_by_hand():
    real = (jnp.array([[0.0, 2.0]]), jnp.array([[1.0, -1.0]]))
    fake = (jnp.array([[0.0, 0.0]]), jnp.array([[3.0, 3.0]]))
    sp = lambda x: np.log1p(np.exp(x))                                                    # noqa: E731
    l_real, l_fake = L.d_logistic_heads(real, fake)
    assert float(l_real) == pytest.approx((sp(0) + sp(-2)) / 2 + (sp(-1) + sp(1)) / 2, rel=1e-6)
    assert float(l_fake) == pytest.approx(sp(0) + sp(3), rel=1e-6)
    # G: the MEAN over heads (util.g_nonsaturating_loss divides by the number of heads).
    assert float(L.g_nonsaturating_heads(fake)) == pytest.approx((sp(0) + sp(-3)) / 2, rel=1e-6)


def test_style_consistency_is_the_group_variance_summed_over_dims():
    s = jnp.array([[[0.0, 1.0], [2.0, 1.0]],            # group 0: var (1, 0)
                   [[1.0, 0.0], [1.0, 4.0]]])           # group 1: var (0, 4)
    assert float(L.style_consistency(s)) == pytest.approx((1.0 + 4.0) / 2)
    # Identical codes in a group cost nothing, however far apart the groups are.
    assert float(L.style_consistency(jnp.array([[[5.0, 5.0]] * 3, [[-9.0, 1.0]] * 3]))) == 0.0


def test_r1_of_the_group_mean_by_hand():
    """A linear head D(x_b) = <c, x_b> (one logit per sample) and a patch head with P logits per sample: the
    gradient of the group mean w.r.t. x_b is c / g (resp. (sum of its patch weights) / (g P)), so R1 = |c|^2 / g^2;
    'sample' removes the 1/g. Groups do not mix."""
    g, rng = 4, np.random.RandomState(0)
    x = jnp.asarray(rng.randn(3, g, 2, 2, 1), jnp.float32)                              # [G,g,2,2,1]
    c = jnp.asarray(rng.randn(2, 2, 1), jnp.float32)
    patches = jnp.asarray(rng.randn(5, 2, 2, 1), jnp.float32)                          # P = 5 patch weights
    heads = lambda v: (jnp.einsum("Gbhwc,hwc->Gb", v, c), jnp.einsum("Gbhwc,phwc->Gbp", v, patches))  # noqa: E731
    expect = float(jnp.sum(c ** 2)) / g ** 2 + float(jnp.sum(jnp.sum(patches, 0) ** 2)) / (g * 5) ** 2
    assert float(L.r1_groups(heads, x)) == pytest.approx(expect, rel=1e-5)
    assert float(L.r1_groups(heads, x, "sample")) == pytest.approx(expect * g ** 2, rel=1e-5)


# ---- layout and augmentation ------------------------------------------------------------------------------------

@pytest.mark.parametrize("ndev", [1, 2, 4])
def test_content_groups_are_the_same_on_any_device_count(ndev):
    """Global sample i belongs to group i mod (N / g) and a group never spans devices (step.py's layout rule)."""
    n_global, g = 32, 4
    idx = np.arange(n_global)
    local = idx.reshape(n_global // ndev, ndev).T                                       # interleaved: [D,n]
    groups = {tuple(sorted(grp)) for dev in local for grp in np.asarray(grouped(jnp.asarray(dev), g))}
    want = {tuple(np.flatnonzero(idx % (n_global // g) == k)) for k in range(n_global // g)}
    assert groups == want


def test_augmentation_identity_range_and_independence():
    img = jnp.asarray(np.random.RandomState(0).uniform(-1, 1, (16, 16, 3)), jnp.float32)
    off = jnp.array([[0.99, 0.5, 0.5, 0.5, 0.5, 0.5, 0.0, 0.0, 0.99]])                  # no affine, no flip
    np.testing.assert_allclose(augment(AugConfig(resize=1.0), img[None], off)[0], img, atol=1e-6)
    flipped = off.at[0, 8].set(0.0)
    np.testing.assert_allclose(augment(AugConfig(resize=1.0), img[None], flipped)[0], img[:, ::-1], atol=1e-6)
    u = jax.random.uniform(jax.random.key(0), (6, NUM_UNIFORM))
    a = AugConfig(p_affine=1.0)              # at 16 px, crops and flips alone give only 3 x 3 x 2 distinct copies
    out = augment(a, jnp.broadcast_to(img, (6, 16, 16, 3)), u)
    assert out.shape == (6, 16, 16, 3) and float(jnp.max(jnp.abs(out))) <= 1.0 + 1e-6
    assert len({np.asarray(o).tobytes() for o in out}) == 6                            # independent per sample
    np.testing.assert_array_equal(augment(a, img[None], u[2:3])[0], out[2])            # a function of its own u


# ---- the step ---------------------------------------------------------------------------------------------------

def one_step(cfg, num_devices: int, rows: dict):
    devices = tuple(jax.devices()[:num_devices])
    mesh = make_mesh(devices)
    rec = cfg.recipe
    state = put_replicated(to_host(rec.init(cfg.hparams, jax.random.key(0), None)[1]), mesh)
    split = {k: np.swapaxes(v.reshape((-1, num_devices) + v.shape[1:]), 0, 1) for k, v in rows.items()}
    fn = build_step(rec.step, cfg.hparams, "shard_map", devices)
    return to_host(fn(state, put_batch(split, mesh, "shard_map"), put_replicated(np.uint32(3), mesh), None))


@pytest.mark.slow
def test_eight_devices_give_the_same_gnr_update_as_one():
    """Batch 32: one content group per device on 8 devices, 8 groups on one. Adam eps = 1 so that the update is
    proportional to the gradient (tests/_train_common.step_config). Step 0 runs the lazy R1 too."""
    cfg = config("opt.eps=1.0")
    rng = np.random.RandomState(0)
    rows = {k: rng.uniform(-1, 1, (32,) + s).astype(np.float32)
            for k, s in cfg.recipe.example_shapes(cfg.hparams).items()}
    (s8, m8), (s1, m1) = one_step(cfg, 8, rows), one_step(cfg, 1, rows)
    assert m1["did_r1"] == 1.0 and m1["reg/r1"] > 0
    for k in m1:
        assert m8[k] == pytest.approx(m1[k], rel=1e-5, abs=1e-6), k
    t8, t1 = state_to_tree(s8), state_to_tree(s1)
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(t8)[0], jax.tree.leaves(t1)):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        assert np.max(np.abs(x - y)) <= 1e-5 * max(np.max(np.abs(y)), 1e-3), jax.tree_util.keystr(path)


# ---- runs -------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory, domains):
    wd = tmp_path_factory.mktemp("gnr_full")
    res = run(config("steps=40", "ckpt_every=20", "sample_every=40", "export_every=40"), wd, data=domains, **QUIET)
    return res, wd


def test_a_tiny_gnr_run_moves_its_losses_the_right_way(trained):
    res, wd = trained
    assert (res.status, res.step) == ("done", 40)
    m = read_metrics(wd)
    first, last = m[0], m[-1]
    assert last["loss/G_cycle"] < 0.85 * first["loss/G_cycle"], (first, last)      # the cycle closes
    assert last["loss/G_style"] < first["loss/G_style"], (first, last)              # styles are recovered
    assert all(np.isfinite(x["loss/D"]) for x in m)
    assert (wd / "fakes000040.png").is_file()


def test_the_export_holds_both_ema_generators_and_previews(trained, domains):
    _, wd = trained
    arch, cfg, mf = registry.load(wd / "ema", "gnr")
    assert sorted(mf.variables) == ["G", "G_B2A"]
    g = registry.generator_of(arch, mf)
    prev = np.asarray(g["previews"]["image"])
    assert prev.shape == (8, 16, 16, 3) and prev.dtype == np.uint8
    faces = {f.tobytes() for f in domains["trainA"].images} | {f[:, ::-1].tobytes() for f in
                                                                domains["trainA"].images}
    assert all(p.tobytes() in faces for p in prev)                   # the run's own (possibly flipped) faces
    imgs = arch.sample(cfg, g, [0, 1, 8])
    assert imgs.shape == (3, 16, 16, 3)
    assert not np.array_equal(imgs[0], imgs[2])                      # seed 8: preview 0 again, another style


@pytest.mark.slow
def test_resume_is_exact(trained, domains, tmp_path):
    _, full_wd = trained
    run(config("steps=20", "ckpt_every=20", "sample_every=40", "export_every=40"), tmp_path, data=domains, **QUIET)
    res = run(config("steps=40", "ckpt_every=20", "sample_every=40", "export_every=40"), tmp_path, data=domains,
              **QUIET)
    assert (res.status, res.step) == ("done", 40)
    trees = []
    for wd in (full_wd, tmp_path):
        ck = Checkpoints(wd / "ckpt")
        try:
            trees.append(state_to_tree(to_host(ck.restore(abstract_state(config()), replicated(make_mesh()))[0])))
        finally:
            ck.close()
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(trees[0])[0], jax.tree.leaves(trees[1])):
        np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


@pytest.mark.slow
def test_fine_tune_from_a_model_file_starts_both_generators_from_it(trained, domains, tmp_path):
    _, wd = trained
    res = run(config("steps=1", "ckpt_every=1", "sample_every=0", "export_every=0",
                     f'init_from="{wd / "ema"}"'), tmp_path, data=domains, **QUIET)
    assert res.status == "done"
    _, _, mf_a = registry.load(wd / "ema", "gnr")
    _, _, mf_b = registry.load(tmp_path / "ema", "gnr")
    for name in ("G", "G_B2A"):
        pa, pb = gnr.network_vars(mf_a.variables[name]), gnr.network_vars(mf_b.variables[name])
        for x, y in zip(jax.tree.leaves(pa["params"]), jax.tree.leaves(pb["params"])):
            assert np.max(np.abs(np.asarray(x) - np.asarray(y))) <= 5e-3      # one Adam step of lr 2e-3 at most


def test_gafu_train_runs_gnr_on_a_prepared_paired_dataset(domains, tmp_path, capsys):
    """`gafu prepare-data paired` (trainA/trainB/testA/testB) feeds `gafu train --config gnr-tiny`."""
    from PIL import Image

    from nets import cli
    src = tmp_path / "s2a"
    for split, key in (("trainA", "trainA"), ("trainB", "trainB"), ("testA", "trainA"), ("testB", "trainB")):
        (src / split).mkdir(parents=True)
        for i, img in enumerate(domains[key].images[:8]):
            Image.fromarray(img).save(src / split / f"{i:03d}.png")
    data = tmp_path / "data"
    assert cli.main(["prepare-data", "paired", str(src), "--out", str(data), "--resolution", "16"]) == 0
    wd = tmp_path / "run"
    args = ["train", "--config", "gnr-tiny", "--workdir", str(wd), "--data", str(data), "--no-progress",
            "--steps", "2"] + [f"--set={o}" for o in TINY + ["sample_every=0"]]
    assert cli.main(args) == 0
    assert "done: 2 steps" in capsys.readouterr().out
    _, cfg, g = registry.load_generator(wd / "ema", "gnr")
    assert cfg.resolution == 16 and g["previews"]["image"].shape == (8, 16, 16, 3)
    # a batch that does not hold whole content groups is refused before anything compiles, naming the group
    assert cli.main(["train", "--config", "gnr-tiny", "--workdir", str(tmp_path / "bad"), "--data", str(data),
                     "--no-progress", "--steps", "1"] + [f"--set={o}" for o in TINY + ["batch=16"]]) == 2
    assert "content group" in capsys.readouterr().err
