"""`gafu eval` end to end on a tiny StyleGAN2 model, a 16 px dataset built by `gafu prepare-data` and a
random-weights Inception .npz (the real weights cannot be had offline), and training's `metrics` at export."""
import json

import jax
import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

from nets import cli, inception, inception_weights, modelfile, stylegan2
from tests._train_common import faces as make_faces
from train.eval import metrics, stats


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval")
    cfg = stylegan2.preset("tiny", resolution=16)
    modelfile.save_model(d / "m", stylegan2.init_model(cfg, jax.random.key(0)), cfg)
    inception_weights.save_npz(inception.init_variables(0), d / "inc.npz", "random-test")
    faces = make_faces(16, 24)
    (d / "src").mkdir()
    for i, img in enumerate(faces.images):
        Image.fromarray(img).save(d / "src" / f"{i:03d}.png")
    assert cli.main(["prepare-data", "folder", str(d / "src"), "--out", str(d / "data"), "--resolution", "16"]) == 0
    return d, faces.images


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(stats.CACHE_ENV, str(tmp_path / "evalcache"))


def test_eval_table_jsonl_and_cache(files, capsys):
    d, _ = files
    args = ["eval", str(d / "m"), "--data", str(d / "data"), "--metrics", "fid1k,kid1k", "--num", "16",
            "--batch", "16", "--inception", str(d / "inc.npz"), "--any-inception", "--no-progress"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["metric", "value", "fakes", "reals", "seconds"]
    fid = float(lines[1].split()[1])
    assert lines[1].split()[0] == "fid1k" and fid > 0 and lines[2].split()[:1] == ["kid1k"]
    assert "from the cache" not in out
    rec = json.loads((d / "metric-fid1k.jsonl").read_text().splitlines()[-1])
    assert rec["metric"] == "fid1k" and rec["num_gen"] == 16 and rec["num_real"] == 16
    assert rec["results"]["fid1k"] == pytest.approx(fid, rel=1e-3) and rec["network"].startswith("other-")
    assert rec["model"] == str(d / "m") and rec["dataset"] == str(d / "data")
    assert cli.main(args) == 0                                       # again: reals from the cache, same value
    out2 = capsys.readouterr().out
    assert "from the cache" in out2 and out2.splitlines()[2].split()[1] == lines[1].split()[1]
    assert len((d / "metric-fid1k.jsonl").read_text().splitlines()) == 2


def test_fid_of_data_with_itself_is_zero_and_grows_with_blur(files):
    _, imgs = files
    emb = stats.Embedder(lambda v, x: inception.FIDInception().apply(v, x), inception.init_variables(0), 16)
    ref = np.concatenate([emb(imgs[:16]), emb(imgs[16:])])
    again = np.concatenate([emb(imgs[8:]), emb(imgs[:8])])            # other batches, other order
    assert abs(metrics.frechet_distance_features(ref, again)) < 1e-3 * np.trace(np.cov(ref, rowvar=False))
    fids = []
    for sigma in (0.7, 1.5):
        blurred = np.stack([gaussian_filter(im.astype(np.float32), (sigma, sigma, 0)) for im in imgs])
        b = np.clip(np.rint(blurred), 0, 255).astype(np.uint8)
        fids.append(metrics.frechet_distance_features(ref, np.concatenate([emb(b[:16]), emb(b[16:])])))
    assert 0 < fids[0] < fids[1]


def test_eval_errors(files, capsys, tmp_path, monkeypatch):
    d, _ = files
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv(inception_weights.ENV, raising=False)
    base = ["eval", str(d / "m"), "--data", str(d / "data"), "--no-progress", "--no-jsonl"]
    assert cli.main(base) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gafu eval: error: ") and inception_weights.URL in err[0]
    assert cli.main(base + ["--metrics", "fid50k_sharp"]) == 2
    assert "unknown metric 'fid50k_sharp'" in capsys.readouterr().err
    assert cli.main(["eval", str(d / "m"), "--metrics", "kid1k", "--inception", str(d / "inc.npz")]) == 2
    assert "--data" in capsys.readouterr().err
    assert cli.main(base + ["--inception", str(d / "inc.npz"), "--split", "testB"]) == 2
    assert "testB" in capsys.readouterr().err


def test_eval_errors_of_the_new_metrics(files, capsys, tmp_path, monkeypatch):
    from nets import nv_vgg16_weights

    d, _ = files
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv(nv_vgg16_weights.ENV, raising=False)
    base = ["eval", str(d / "m"), "--data", str(d / "data"), "--no-progress", "--no-jsonl"]
    assert cli.main(base + ["--metrics", "pr1k3"]) == 2                 # NV's VGG-16 is looked for, not found
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and nv_vgg16_weights.URL in err[0] and "--vgg16" in err[0] and "--convert-vgg16" in err[0]
    assert cli.main(base + ["--metrics", "lpips_div10"]) == 2
    assert "stylegan2 model without sources" in capsys.readouterr().err
    assert cli.main(["eval", "--convert-vgg16", str(tmp_path / "vgg16.pt")]) == 2
    assert "--convert-vgg16 needs --out" in capsys.readouterr().err
    assert cli.main(["eval", "--convert-vgg16", str(tmp_path / "vgg16.pt"), "--out", str(tmp_path / "v.npz")]) == 2
    assert nv_vgg16_weights.URL in capsys.readouterr().err                # the missing file, one clear line
    assert not (tmp_path / "v.npz").exists()


def test_training_metrics_refuse_before_the_run(tmp_path, monkeypatch):
    from nets import nv_vgg16_weights
    from tests._train_common import make_config
    from train.eval.hook import ExportMetrics

    with pytest.raises(ValueError, match="lpips_div10: .*this run is a stylegan2 model"):
        ExportMetrics.create(make_config("metrics=lpips_div10"), None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv(nv_vgg16_weights.ENV, raising=False)
    with pytest.raises(nv_vgg16_weights.VGG16WeightsError, match="vgg16"):
        ExportMetrics.create(make_config("metrics=pr1k3"), None)


@pytest.mark.slow
def test_training_metrics_at_export(files, tmp_path):
    from tests._train_common import make_config
    from train.loop import run
    from train.logs import read_metrics

    d, _ = files
    cfg = make_config("batch=8", "steps=2", "export_every=2", "sample_every=0", "ckpt_every=2",
                      "metrics=fid16", f"metrics_inception={d / 'inc.npz'}", "metrics_any_inception=true")
    with pytest.raises(ValueError, match="unknown metric"):
        make_config("metrics=fid_wrong")
    res = run(cfg, tmp_path / "wd", data=str(d / "data"), progress=False, log=lambda s: None)
    assert res.status == "done"
    rec = json.loads((tmp_path / "wd" / "metric-fid16.jsonl").read_text())
    assert rec["step"] == 2 and rec["num_gen"] == 16 and rec["num_real"] == 16
    logged = [m for m in read_metrics(tmp_path / "wd") if "fid16" in m]
    assert logged == [{"step": 2, "fid16": pytest.approx(rec["results"]["fid16"])}]
