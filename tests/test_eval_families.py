"""train/eval on translation models: SPADE and GANs N' Roses fakes come from the test split's sources (the right
ones, the right count and shapes), FID / KID / precision-recall records through run.evaluate, LPIPS diversity,
the diversity FID, and the metrics each family refuses. Feature networks are a tiny stand-in (4 x 4 block means
of the image): what is checked here is the plumbing, the networks themselves are tests/test_inception.py's and
test_nv_vgg16.py's."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from datasets.pipeline import ArraySource
from nets import gnr, modelfile, spade
from tests.test_gnr_interp import CFG as GNR_CFG, write_model as write_gnr
from tests.test_spade_paint import CFG as SPADE_CFG, random_model as random_spade
from train.eval import fakes, run, stats


@pytest.fixture(scope="module", autouse=True)
def _rank_promotion_allowed():
    """nets/spade.py adds [C] biases to [..., C] activations (see tests/test_spade_paint.py)."""
    with jax.numpy_rank_promotion("allow"):
        yield


def block_means(v, x):                                         # [N,R,R,3] -> [N,48]: a stand-in feature network
    n, r = x.shape[:2]
    return x.reshape(n, 4, r // 4, 4, r // 4, 3).mean(axis=(2, 4)).reshape(n, -1)


def evaluator(model, data, split, nets=("inception", "vgg16")):
    embs = {k: stats.Embedder(block_means, None, 8) for k in nets}
    return run.Evaluator(model, data, split, None, embs, {k: f"stand-in-{k}" for k in nets}, progress=False,
                         log=lambda s: None)


def rand_images(n, r, seed):
    return np.random.RandomState(seed).randint(0, 256, (n, r, r, 3), np.uint8)


@pytest.fixture(scope="module")
def gnr_model(tmp_path_factory):
    return fakes.load(str(write_gnr(tmp_path_factory.mktemp("gnr") / "m")))


@pytest.fixture(scope="module")
def gnr_data():
    return {"testA": ArraySource(rand_images(5, 16, 0)), "testB": ArraySource(rand_images(7, 16, 1))}


@pytest.fixture(scope="module")
def spade_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("spade") / "m"
    modelfile.save_model(path, random_spade(SPADE_CFG, 0), SPADE_CFG, arch="spade")
    return fakes.load(str(path))


@pytest.fixture(scope="module")
def spade_data():
    r = SPADE_CFG.resolution
    return {"test": ArraySource(rand_images(6, r, 2), sketch=rand_images(6, r, 3))}


def test_gnr_fakes_translate_the_test_faces_in_order(gnr_model, gnr_data):
    out = np.concatenate(list(fakes.fake_batches(gnr_model, 12, 8, gnr_data)))
    assert out.shape == (12, 16, 16, 3) and out.dtype == np.uint8
    faces = gnr_data["testA"].images[np.arange(12) % 5]                         # source i mod 5, style seed i
    want = gnr.translate(GNR_CFG, gnr_model.g_vars, faces, gnr.styles_from_seeds(GNR_CFG, range(12))[:, None])
    assert np.abs(out.astype(int) - want[:, 0].astype(int)).max() <= 1
    assert not np.array_equal(out[0], out[5])                           # same face, other style
    with pytest.raises(ValueError, match="testA"):
        list(fakes.fake_batches(gnr_model, 4, 8, {"testB": gnr_data["testB"]}))


def test_spade_fakes_paint_the_test_sketches_in_order(spade_model, spade_data):
    r = SPADE_CFG.resolution
    out = np.concatenate(list(fakes.fake_batches(spade_model, 9, 8, spade_data)))
    assert out.shape == (9, r, r, 3) and out.dtype == np.uint8
    want = spade.paint(SPADE_CFG, spade_model.g_vars, spade_data["test"].features["sketch"][np.arange(9) % 6],
                       list(range(9)))
    assert np.abs(out.astype(int) - want.astype(int)).max() <= 1
    with pytest.raises(ValueError, match="no feature 'sketch'"):
        list(fakes.fake_batches(spade_model, 4, 8, {"test": ArraySource(rand_images(3, r, 4))}))


@pytest.mark.parametrize("family", ["gnr", "spade"])
def test_evaluate_fid_kid_pr_records(family, gnr_model, gnr_data, spade_model, spade_data):
    model, data = (gnr_model, gnr_data) if family == "gnr" else (spade_model, spade_data)
    split = fakes.DEFAULT_SPLITS[family][0]
    ev = evaluator(model, data, split)
    specs = run.parse_metrics("fid1k,kid1k,pr1k3", num=10)
    recs = run.evaluate(ev, specs)
    n_real = len(data[split])
    assert [r["metric"] for r in recs] == ["fid1k", "kid1k", "pr1k3"]
    assert all(r["num_gen"] == 10 and r["num_real"] == n_real and r["family"] == family for r in recs)
    assert recs[0]["results"]["fid1k"] > 0 and np.isfinite(recs[1]["results"]["kid1k"])
    p, r = recs[2]["results"]["pr1k3_precision"], recs[2]["results"]["pr1k3_recall"]
    assert set(recs[2]["results"]) == {"pr1k3_precision", "pr1k3_recall"} and 0 <= p <= 1 and 0 <= r <= 1
    assert recs[0]["network"] == "stand-in-inception" and recs[2]["network"] == "stand-in-vgg16"
    # the same numbers from the features by hand: reals are the split's images, fakes the translations
    fake = np.concatenate([block_means(None, b / 127.5 - 1) for b in fakes.fake_batches(model, 10, 8, data)])
    real = block_means(None, data[split].images / 127.5 - 1)
    assert recs[0]["results"]["fid1k"] == pytest.approx(
        run.metrics.frechet_distance_features(fake, real), rel=1e-4)
    assert (p, r) == run.metrics.precision_recall(real, fake, 3)
    assert "pr1k3_precision" in run.format_table(recs)


def test_lpips_diversity_of_gnr_styles_and_a_style_blind_decoder(gnr_model, gnr_data, tmp_path):
    ev = evaluator(gnr_model, gnr_data, "testB", nets=())
    spec = run.parse_metric("lpips_div3x4")
    rec = run.evaluate(ev, [spec])[0]
    div = rec["results"]["lpips_div3x4"]
    assert rec["num_gen"] == 12 and rec["network"] == "lpips-vgg16-bundled" and div > 0
    outs = list(fakes.diversity_batches(gnr_model, gnr_data, 3, 4))
    assert len(outs) == 3 and outs[0].shape == (4, 16, 16, 3)
    ev.model = style_blind(gnr_model)                                  # every style gives one picture
    assert run.evaluate(ev, [spec])[0]["results"]["lpips_div3x4"] == pytest.approx(0.0, abs=1e-6)


def test_lpips_diversity_of_spade_seeds(spade_model, spade_data):
    ev = evaluator(spade_model, spade_data, "test", nets=())
    assert run.compute(ev, run.parse_metric("lpips_div2x3"))[0]["lpips_div2x3"] > 0


def style_blind(model):
    """The model with the mapping's last layer zeroed: w no longer depends on the style code."""
    g = jax.tree.map(np.array, model.g_vars)
    last = g["params"]["mapping"][f"fc{GNR_CFG.n_mlp - 1}"]
    last["kernel"] = np.zeros_like(last["kernel"])
    return fakes.Model(model.path, model.arch, model.cfg, g)


def test_parse_diversity_fid():
    assert run.parse_metric("dfid100") == run.MetricSpec("dfid100", "dfid", 100, None, (run.DFID_STYLES,))
    assert run.parse_metric("dfid2kx5") == run.MetricSpec("dfid2kx5", "dfid", 2000, None, (5,))
    assert run.parse_metric("dfid10x7", num=3).num_gen == 3 and run.parse_metric("dfid3").network == "inception"
    with pytest.raises(ValueError, match="2 styles per source"):
        run.parse_metric("dfid10x1")


def test_diversity_fid_is_the_mean_of_per_source_fids(gnr_model, gnr_data):
    ev = evaluator(gnr_model, gnr_data, "testB", nets=("inception",))
    spec = run.parse_metric("dfid3x4")
    rec = run.evaluate(ev, [spec])[0]
    assert (rec["num_gen"], rec["num_real"], rec["network"]) == (12, 7, "stand-in-inception")
    real = block_means(None, gnr_data["testB"].images / 127.5 - 1)                     # all 7 reals
    outs = list(fakes.diversity_batches(gnr_model, gnr_data, 3, 4))                  # 3 x [4,16,16,3]
    per_source = [run.metrics.frechet_distance_features(block_means(None, o / 127.5 - 1), real) for o in outs]
    assert rec["results"]["dfid3x4"] == pytest.approx(np.mean(per_source), rel=1e-5)
    assert len(set(np.round(per_source, 6))) == 3                                     # three different sources
    # style-blind: one picture per source, zero spread, so each FID is |mu_i - mu_real|^2 + tr(cov_real)
    ev.model = style_blind(gnr_model)
    blind = run.compute(ev, spec)[0]["dfid3x4"]
    mu, cov = run.metrics.mean_cov(real)
    pics = [block_means(None, o[:1] / 127.5 - 1)[0] for o in fakes.diversity_batches(ev.model, gnr_data, 3, 4)]
    want = np.mean([np.square(p - mu).sum() + np.trace(cov) for p in pics])
    assert blind == pytest.approx(want, rel=1e-4) and blind >= np.trace(cov)


def test_diversity_fid_of_spade_seeds(spade_model, spade_data):
    ev = evaluator(spade_model, spade_data, "test", nets=("inception",))
    rec = run.evaluate(ev, [run.parse_metric("dfid2x3")])[0]
    assert rec["num_gen"] == 6 and rec["num_real"] == 6 and np.isfinite(rec["results"]["dfid2x3"])


def test_family_errors(gnr_model, gnr_data, tmp_path):
    from nets import stylegan2

    cfg = stylegan2.preset("tiny", resolution=16)
    modelfile.save_model(tmp_path / "sg2", stylegan2.init_model(cfg, jax.random.key(0)), cfg)
    sg2 = fakes.load(str(tmp_path / "sg2"))
    with pytest.raises(ValueError, match="lpips_div10: LPIPS diversity .* stylegan2 model without sources"):
        run.make_evaluator(sg2, None, run.parse_metrics("lpips_div10"))
    with pytest.raises(ValueError, match="dfid10: the diversity FID .* stylegan2 model without sources"):
        run.make_evaluator(sg2, None, run.parse_metrics("dfid10"))
    with pytest.raises(ValueError, match="^dfid10 need real images or test sources: pass --data"):
        run.make_evaluator(gnr_model, None, run.parse_metrics("dfid10"))
    with pytest.raises(ValueError, match="ppl2_wend: PPL walks a StyleGAN2 latent space"):
        run.make_evaluator(gnr_model, gnr_data, run.parse_metrics("ppl2_wend"))
    with pytest.raises(ValueError, match="lpips_div10 need real images or test sources: pass --data"):
        run.make_evaluator(gnr_model, None, run.parse_metrics("lpips_div10"))
    with pytest.raises(ValueError, match="no split 'testA'"):
        run.make_evaluator(gnr_model, {"testB": gnr_data["testB"]}, run.parse_metrics("lpips_div10"))
    with pytest.raises(ValueError, match="at least 16"):
        from train.eval import perceptual
        perceptual.lpips_diversity(iter([np.zeros((3, 8, 8, 3), np.uint8)]), params={})


def test_pairwise_features_equal_the_pairwise_distance_form():
    from nets import lpips
    from train.eval import perceptual

    params = lpips.lpips_params()
    x = np.random.RandomState(5).uniform(-1, 1, (4, 16, 16, 3)).astype(np.float32)
    dist = jax.jit(lpips.lpips_distance)
    ref = perceptual.mean_pairwise(x, lambda a, b: dist(params, jnp.asarray(a), jnp.asarray(b)))
    got = float(perceptual._pairwise_fn(4)(params, jnp.asarray(x)))
    assert got == pytest.approx(ref, rel=1e-5) and ref > 0
    same = np.repeat(x[:1], 3, axis=0)
    assert abs(float(perceptual._pairwise_fn(3)(params, jnp.asarray(same)))) < 1e-9    # batch rounding only
