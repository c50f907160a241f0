"""`gafu serve` (interp/web.py, interp/web_tabs.py): the tab functions on tiny models without a browser, the page's
error and missing-model messages, that the served page references nothing remote, and one real browser run
(headless Debian Chromium through selenium) that uploads the astronaut and waits for its toon.
"""
import asyncio
import gc
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from html.parser import HTMLParser
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image
from skimage import data

from _tiny_generator import tiny_generator

gr = pytest.importorskip("gradio", reason="gafu serve needs the web extra: pip install 'gafu[web]'")

from interp import web as WEB  # noqa: E402
from interp import web_tabs as W  # noqa: E402
from interp.blend_files import BlendSpec  # noqa: E402
from interp.toonify import prepare_photo, render_latent  # noqa: E402
from nets import images, lpips  # noqa: E402
from nets.modelfile import save_model  # noqa: E402
from nets.stylegan2 import preset, without_noise  # noqa: E402

# gradio's Blocks make asyncio event loops (each holding a socket pair) that it replaces without closing
# (gradio/utils.py safe_get_lock); their ResourceWarnings at garbage collection are gradio's, not ours. They are
# ignored here and collected before this module ends (`_collect_gradio_loops`), so none reaches another test.
pytestmark = [pytest.mark.filterwarnings(f"ignore:Exception ignored in. {obj}:pytest.PytestUnraisableExceptionWarning")
              for obj in ("<socket.socket", "<function BaseEventLoop.__del__")]


@pytest.fixture(scope="module", autouse=True)
def _collect_gradio_loops():
    yield
    gc.collect()                                       # the loops gradio dropped, while this module's filters hold
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)        # get_event_loop without a running loop
        try:
            loop = asyncio.get_event_loop_policy().get_event_loop()
        except RuntimeError:                           # no Blocks were built in this process
            loop = None
    if loop is not None:
        loop.close()                                   # the one it left set
        asyncio.set_event_loop(None)
    gc.collect()

CFG = preset("tiny", conv_impl="xla")             # 32 px, as tests/test_toonify.py
R = CFG.resolution
K = images.VIEW_MIN // R                          # small images come back nearest-upscaled K x K
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# Chromium on a closed network: no background traffic, a fresh profile (the task's required flags)
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1400,1100")
# Remote URLs gradio writes into its HTML as text that no browser fetches: the social-preview <meta> tags of its
# index template, and the example values of its API documentation (Image's example input).
GRADIO_RAW = "https://raw.githubusercontent.com/gradio-app/gradio/main/"
INERT_URLS = {"https://gradio.app/", GRADIO_RAW + "js/_website/src/lib/assets/img/header-image.jpg",
              GRADIO_RAW + "test/test_files/bus.png"}


def transfer_of(a: dict, seed: int = 1) -> dict:
    """A 'fine-tuned' copy of G: every weight moved, the same noise maps."""
    rng = np.random.RandomState(seed)
    return {"params": jax.tree.map(lambda x: x + np.asarray(0.5 * rng.randn(*x.shape), x.dtype), a["params"]),
            "buffers": a["buffers"]}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    """A `gafu demo`-shaped folder with tiny StyleGAN2 model files, and the astronaut as a PNG."""
    d = tmp_path_factory.mktemp("web")
    a = tiny_generator()
    save_model(d / "demo" / "train_A" / "ema", {"G": a}, CFG)
    save_model(d / "demo" / "train_B" / "ema", {"G": transfer_of(a)}, CFG)
    images.write_png(d / "astronaut.png", data.astronaut(), min_side=0)
    return d


@pytest.fixture(scope="module")
def toonifier():
    a = tiny_generator()
    return W.Toonifier(CFG, a, transfer_of(a), lpips.lpips_params())


def error_text(excinfo) -> str:
    return str(excinfo.value.message if hasattr(excinfo.value, "message") else excinfo.value)


# ---- uploads and messages (no model runs) ------------------------------------------------------------------------

def test_uploads_of_any_size_are_bounded_before_use():
    big = np.random.RandomState(0).randint(0, 256, (3000, 1500, 3)).astype(np.uint8)
    out = W.fit_upload(big, 1024)
    assert out.shape == (1024, 512, 3) and out.dtype == np.uint8
    np.testing.assert_allclose(out.mean((0, 1)), big.mean((0, 1)), atol=2)          # a resize, not a crop
    small = data.astronaut()[:100, :80]
    np.testing.assert_array_equal(W.fit_upload(small, 1024), small)                  # within the bound: untouched
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[:5, :, :3], rgba[:5, :, 3] = (200, 10, 10), 255                            # top opaque red, bottom clear
    flat = W.fit_upload(rgba)
    assert flat.shape == (10, 10, 3)
    assert (flat[:5] == (200, 10, 10)).all() and (flat[5:] == 255).all()           # transparent = white paper
    assert W.fit_upload(np.full((6, 4), 7, np.uint8)).shape == (6, 4, 3)
    with pytest.raises(ValueError, match="no photo: upload one first"):
        W.fit_upload(None, what="photo")
    with pytest.raises(ValueError, match="8-bit"):
        W.fit_upload(np.zeros((4, 4, 3), np.float32))


def test_user_errors_become_messages_in_the_page_not_tracebacks(toonifier):
    spec = WEB.WebSpec()
    with pytest.raises(gr.Error) as e:
        WEB.toonify(toonifier, spec, None, 10, 4, False)
    assert error_text(e) == "no photo: upload one first"
    with pytest.raises(gr.Error) as e:                                               # 2^2 = 4: not offered
        WEB.toonify(toonifier, spec, data.astronaut(), 10, 2, False)
    assert error_text(e) == "swap resolution 4 is not one of this model's 8, 16, 32"
    with pytest.raises(gr.Error) as e:
        WEB.stylize({}, spec, data.astronaut(), data.astronaut(), "mine", 5, 64, False)
    assert "unknown preset 'mine'" in error_text(e) and "gatys" in error_text(e)
    with pytest.raises(gr.Error) as e:
        WEB.stylize({}, spec, data.astronaut(), None, "gatys", 5, 64, False)
    assert error_text(e) == "no style image: upload one first"
    assert WEB.retoon(toonifier, None, 4, False) == gr.skip()                       # nothing projected yet
    with pytest.raises(RuntimeError):                                                # a bug stays a bug
        with WEB.in_page_errors():
            raise RuntimeError("not the user's fault")


def test_tabs_without_models_say_which_file_and_how_to_make_it(tmp_path):
    bad = tmp_path / "corrupt"
    bad.mkdir()
    (bad / "gafu.json").write_text("{ not json")
    spec = WEB.WebSpec(toonify_base=tmp_path / "demo" / "train_A" / "ema",
                       toonify_transfer=tmp_path / "demo" / "train_B" / "ema", spade=bad, gnr=tmp_path / "gnr")
    loaded = WEB.load(spec)
    assert loaded.toonify == W.Missing(f"{tmp_path / 'demo' / 'train_A' / 'ema'} does not exist: "
                                       f"{WEB.HOW['toonify']}.")
    assert isinstance(loaded.painter, W.Missing) and str(bad) in loaded.painter.message \
        and "gafu demo spade" in loaded.painter.message
    assert loaded.translator.message.startswith(f"{tmp_path / 'gnr'} does not exist: run `gafu demo gnr`")
    assert "--dfi-attributes" in loaded.dfi.message
    assert isinstance(loaded.vgg, dict)                                              # bundled: always there
    app = WEB.build_app(spec, loaded)                                                # the page still builds
    texts = [c.get("props", {}).get("value") for c in app.config["components"]]
    for m in (loaded.toonify, loaded.painter, loaded.translator, loaded.dfi):
        assert any(isinstance(t, str) and m.message in t for t in texts), m.message
    assert any(c.get("props", {}).get("elem_id") == "stylize-run" for c in app.config["components"])


def test_every_model_run_shares_one_queue_slot(toonifier):
    app = WEB.build_app(WEB.WebSpec(), WEB.Loaded(toonifier, {}, W.Missing("x"), W.Missing("y"), W.Missing("z")))
    fns = list(app.fns.values())
    assert len(fns) == 3                                     # Toonify, its swap slider, Stylize
    assert all(f.concurrency_id == WEB.GROUP and f.concurrency_limit == 1 for f in fns)


class _Refs(HTMLParser):
    """Every URL an HTML page makes the browser load: src / href of script, link, img, iframe, source."""

    def __init__(self):
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("script", "img", "iframe", "source", "embed") and a.get("src"):
            self.refs.append(a["src"])
        if tag == "link" and a.get("href"):
            self.refs.append(a["href"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read().decode("utf-8", errors="replace")


def test_the_served_page_loads_nothing_from_the_network(tmp_path):
    app = WEB.build_app(WEB.WebSpec(), WEB.Loaded(W.Missing("a"), {}, W.Missing("b"), W.Missing("c"),
                                                 W.Missing("d")))
    url = WEB.launch(app, "127.0.0.1", _free_port(), block=False, quiet=True)
    try:
        html = _get(url)
        parser = _Refs()
        parser.feed(html)
        assert parser.refs, "the page references its own scripts and styles"
        remote = [u for u in parser.refs if re.match(r"(https?:)?//", u) and not u.startswith(url.rstrip("/"))]
        assert not remote, remote
        css = [_get(url + "theme.css")] + [_get(url + u.lstrip("./")) for u in parser.refs if u.endswith(".css")]
        assert any("system-ui" in c for c in css)                                   # the theme's system fonts
        for c in css:
            loads = re.findall(r"url\(\s*['\"]?([^'\")]+)|@import\s+['\"]([^'\"]+)", c)
            assert not [u for pair in loads for u in pair if re.match(r"(https?:)?//", u)]
            assert "fonts.googleapis" not in c and "fonts.gstatic" not in c
        strings = set(re.findall(r"https?://[^\s\"'<>)\\]+", html))
        assert {s for s in strings if not s.startswith(url.rstrip("/"))} <= INERT_URLS
    finally:
        app.close()


@pytest.mark.parametrize("argv, message", [
    (["--toonify-base", "a"], "give both --toonify-base and --toonify-transfer"),
    (["--dfi-attributes", "list_attr_celeba.txt"], "the DFI tab needs both --dfi-attributes FILE and --dfi-images"),
    (["--dfi-attributes", "none.txt", "--dfi-images", "."], "--dfi-attributes none.txt does not exist"),
    (["--dfi-attributes", "x.txt", "--dfi-images", "no_such_dir"], "--dfi-images no_such_dir is not a folder"),
    (["--port", "0"], "--port must be in 1 .. 65535; got 0"),
    (["--project-steps", "15"], "--project-steps must be a multiple of 10 in 10 .. 1000"),
    (["--max-side", "10"], "--max-side must be in 64 .. 8192; got 10"),
])
def test_serve_flag_errors_are_one_line_before_anything_loads(argv, message, capsys, tmp_path, monkeypatch):
    from nets.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["serve", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gafu serve: error: ") and message in err and err.count("\n") == 1, err


# ---- tab functions on tiny models ------------------------------------------------------------------------------

def test_toonify_tab_projects_renders_the_swap_and_rerenders_without_projecting(toonifier):
    out = W.run_toonify(toonifier, data.astronaut(), steps=10, swap=16, noise=False)
    for img in (out.face, out.projection, out.toon):
        assert img.shape == (R, R, 3) and img.dtype == np.uint8
    assert out.ws.shape == (1, CFG.num_ws, CFG.w_dim)
    base, transfer = without_noise(toonifier.base), without_noise(toonifier.transfer)
    np.testing.assert_array_equal(out.projection, render_latent(CFG, base, out.ws))
    np.testing.assert_array_equal(out.toon, render_latent(CFG, BlendSpec("swap", 16).apply(base, transfer), out.ws))
    # one row: photo model | swap at 32, 16, 8 | toon model, each cell upscaled K x K, 2 px padding
    assert out.grid.shape == (K * R + 4, 5 * (K * R + 2) + 2, 3)
    cell = lambda i: out.grid[2:2 + K * R, 2 + i * (K * R + 2):2 + i * (K * R + 2) + K * R][::K, ::K]  # noqa: E731
    np.testing.assert_array_equal(cell(0), out.projection)
    np.testing.assert_array_equal(cell(2), out.toon)
    np.testing.assert_array_equal(cell(4), render_latent(CFG, transfer, out.ws))
    other = W.toon_at(toonifier, out.ws, 8, noise=False)                         # the slider: a render, no projection
    np.testing.assert_array_equal(other, cell(3))
    assert np.abs(other.astype(int) - out.toon).mean() > 1
    assert "LPIPS" in out.note and ("centre square" in out.note or "aligned" in out.note)
    face, proj, toon, grid, note, ws = WEB.toonify(toonifier, WEB.WebSpec(), data.astronaut(), 10, 4, False)
    assert face.shape == proj.shape == toon.shape == (K * R, K * R, 3)           # shown upscaled, nearest
    np.testing.assert_array_equal(toon[::K, ::K], out.toon)                      # same seed, same result
    np.testing.assert_array_equal(WEB.retoon(toonifier, ws, 3, False)[::K, ::K], other)


def test_face_crop_aligns_with_the_extra_or_says_it_used_the_centre():
    photo = data.astronaut()
    face, note = W.face_crop(photo, 64)
    assert face.shape == (64, 64, 3) and face.dtype == np.uint8
    from nets import align
    if align.available():
        assert note.startswith("Face aligned")
        assert np.abs(face.astype(int) - prepare_photo(photo, 64)).mean() > 5     # not just the centre square
    else:
        assert "gafu[align]" in note
        np.testing.assert_array_equal(face, prepare_photo(photo, 64))
    blank, note = W.face_crop(np.full((80, 120, 3), 128, np.uint8), 32)            # no face in it
    np.testing.assert_array_equal(blank, np.full((32, 32, 3), 128, np.uint8))
    assert "centre square was used" in note


@pytest.mark.slow
def test_style_transfer_tab_returns_the_stylised_image():
    content, style = data.astronaut(), data.coffee()
    params = W.load_vgg()
    img = WEB.stylize(params, WEB.WebSpec(), content, style, "chainer-gogh", 3, 64, False)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    kept = WEB.stylize(params, WEB.WebSpec(), content, style, "chainer-gogh", 3, 64, True)
    assert np.abs(kept.astype(int) - img).mean() > 1                              # colour preservation acts


def _gnr_translator():
    from interp import gnr as T
    from nets import gnr
    cfg = gnr.GNRConfig(resolution=16, num_down=2, channel_base=128, channel_max=16, style_dim=16, n_mlp=2,
                        local_res=4, global_res=4, diversity_features=8, latent_d_width=16)   # tests/test_gnr_interp
    return T.Translator(cfg, gnr.init_model(cfg, jax.random.key(0))["G"], None, Path("gnr-in-memory"))


def _spade_painter():
    from test_spade_paint import random_model                       # init_model's tree, numpy values, no compile
    from interp import paint
    from nets import spade
    cfg = spade.preset("tiny", rough_size=64)
    return paint.Painter(cfg, random_model(cfg, 0)["G"], None, Path("spade-in-memory"))


def _cells(grid: np.ndarray, n: int, side: int) -> list[np.ndarray]:
    """The n cells of a one-row make_grid (2 px padding)."""
    assert grid.shape == (side + 4, n * (side + 2) + 2, 3)
    return [grid[2:2 + side, 2 + i * (side + 2):2 + i * (side + 2) + side] for i in range(n)]


def test_spade_tab_paints_a_photo_or_a_drawn_rough():
    from datasets.sketch import rough_sketch
    from interp import paint

    p = _spade_painter()
    photo = data.astronaut()[::3, ::3]
    side = images.VIEW_MIN                                              # 32 px cells shown 4x
    with jax.numpy_rank_promotion("allow"):                             # as tests/test_spade_paint.py
        fig = W.run_paint(p, photo, False, 2, 0, rough_sketch)
        rough = paint.rough_from_photo(photo, p.cfg, rough_sketch)
        want = paint.paint_figure(p.cfg, p.g_vars, rough, [0, 1]).paintings
        np.testing.assert_array_equal(_cells(fig, 3, side)[0][::4, ::4], rough)
        np.testing.assert_array_equal(np.stack([c[::4, ::4] for c in _cells(fig, 3, side)[1:]]), want)
        drawing = np.zeros((300, 300, 4), np.uint8)                     # ImageEditor: a transparent canvas ...
        drawing[:150, :, :3], drawing[:150, :, 3] = (30, 90, 200), 255  # ... with the top half painted blue
        drawn = WEB.spade_paint(p, WEB.WebSpec(make_rough=rough_sketch), {"composite": drawing},
                                WEB.PAINT_MODES[1], 2, 3)              # 2 again: the same program
    painted_rough = _cells(drawn, 3, side)[0][::4, ::4]
    assert (painted_rough[:13] == (30, 90, 200)).all() and (painted_rough[19:] == 255).all()   # as drawn
    with pytest.raises(gr.Error, match="number of paintings must be in 1 .. 16; got 0"):
        WEB.spade_paint(p, WEB.WebSpec(make_rough=rough_sketch), photo, WEB.PAINT_MODES[0], 0, 0)


def test_gnr_tab_gives_one_face_many_styles():
    from interp import gnr as T

    t = _gnr_translator()
    fig, note = WEB.gnr_translate(t, WEB.WebSpec(), data.astronaut(), 3, 5, 1.0)
    cells = [c[::8, ::8] for c in _cells(fig, 4, images.VIEW_MIN)]      # 16 px cells shown 8x
    face, _ = W.face_crop(data.astronaut(), 16)
    np.testing.assert_array_equal(cells[0], face)
    want = T.translate_image(t, face, T.seed_styles(t.cfg, 5, 3)).outputs
    np.testing.assert_array_equal(np.stack(cells[1:]), want)
    assert "centre square" in note or "aligned" in note
    with pytest.raises(gr.Error, match="no photo: upload one first"):
        WEB.gnr_translate(t, WEB.WebSpec(), None, 3, 5, 1.0)


def test_the_page_has_every_tab_when_every_model_is_given():
    spec = WEB.WebSpec(dfi=W.DFIData(_attribute_rows(), Path("faces"), 32))
    loaded = WEB.Loaded(W.Missing("no toonify"), {}, _spade_painter(), _gnr_translator(), spec.dfi)
    ids = {c.get("props", {}).get("elem_id") for c in WEB.build_app(spec, loaded).config["components"]}
    assert {"stylize-run", "dfi-run", "dfi-out", "spade-picture", "spade-run", "gnr-run", "gnr-out"} <= ids
    assert "toonify-run" not in ids


def _attribute_rows():
    from interp.feature_files import AttributeRows
    values = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1], [1, 1], [-1, -1]], np.float32)   # Smiling, Male
    return AttributeRows("celeba", ["Smiling", "Male"], [f"{i:06d}.png" for i in range(6)], values)


@pytest.mark.slow
def test_dfi_tab_edits_an_uploaded_face(tmp_path):
    rows = _attribute_rows()
    for i, f in enumerate(rows.files):                                  # six small 'faces'
        images.write_png(tmp_path / f, data.astronaut()[20 + 5 * i:220 + 5 * i, 140:340], min_side=0)
    d = W.DFIData(rows, tmp_path, size=32, cache_dir=None)
    out = WEB.dfi(d, WEB.WebSpec(), data.astronaut()[:250, 120:370], "Smiling", False, 0.4, 3, 2)
    assert out.shape == (images.VIEW_MIN, images.VIEW_MIN, 3)
    with pytest.raises(gr.Error, match="unknown attribute 'Hat'"):
        WEB.dfi(d, WEB.WebSpec(), data.astronaut(), "Hat", False, 0.4, 3, 2)


# ---- the browser -----------------------------------------------------------------------------------------------

def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"gafu serve exited with {proc.returncode}: {log.read_text()}")
        try:
            _get(url)
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"gafu serve did not answer at {url} within {timeout} s")


@pytest.mark.skipif(not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()),
                    reason=f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): "
                           f"apt-get install chromium chromium-driver")
def test_browser_uploads_a_photo_and_gets_its_toon(demo_dir, tmp_path, monkeypatch):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    port, cwd = _free_port(), tmp_path / "cwd"
    cwd.mkdir()
    env = {**os.environ, "GAFU_COMPILE_CACHE": os.path.expanduser("~/.cache/gafu_jax_test_cache"),
           "JAX_PLATFORMS": "cpu"}
    monkeypatch.setenv("SE_OFFLINE", "true")                     # Selenium Manager never goes online
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "nets.cli", "serve", "--demo", str(demo_dir / "demo"),
                             "--port", str(port), "--project-steps", "10", "--spade", str(tmp_path / "no_spade"),
                             "--gnr", str(tmp_path / "no_gnr")], cwd=cwd, env=env, stdout=log,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    driver = None
    try:
        _wait_http(url, proc, tmp_path / "serve.log", 120)
        opts = webdriver.ChromeOptions()
        opts.binary_location = str(CHROMIUM)
        for flag in CHROME_FLAGS + (f"--user-data-dir={tmp_path / 'profile'}",):
            opts.add_argument(flag)
        opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
        driver.get(url)
        wait = WebDriverWait(driver, 60)
        run = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#toonify-run")))

        run.click()                                              # no photo yet: a message, not a traceback
        toast = wait.until(EC.visibility_of_element_located(
            (By.XPATH, "//*[contains(text(), 'no photo: upload one first')]")))
        assert "Traceback" not in driver.find_element(By.TAG_NAME, "body").text
        assert toast.is_displayed()

        driver.find_element(By.CSS_SELECTOR, "#toonify-photo input[type=file]").send_keys(
            str(demo_dir / "astronaut.png"))
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#toonify-photo img")))
        run.click()
        toon = WebDriverWait(driver, 300).until(
            EC.presence_of_element_located((By.CSS_SELECTOR, "#toonify-toon img")))
        WebDriverWait(driver, 30).until(
            EC.text_to_be_present_in_element((By.CSS_SELECTOR, "#toonify-note"), "LPIPS"))
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(str(tmp_path / "page.png"))
        try:
            shutil.copy(tmp_path / "page.png", "/work/notes/web_screenshot.png")
        except OSError:
            pass                                                 # the lead's notes folder exists only on that box

        src = toon.get_attribute("src")
        assert src.startswith(url), src                          # served by gafu serve itself
        with urllib.request.urlopen(src, timeout=30) as r:
            got = np.asarray(Image.open(r).convert("RGB"))
        assert got.shape == (K * R, K * R, 3)                    # the 32 px toon, shown 4x nearest
        np.testing.assert_array_equal(got, images.upscale_nearest(got[None, ::K, ::K], K * R)[0])
        target = images.upscale_nearest(prepare_photo(data.astronaut(), R)[None], K * R)[0]
        assert np.abs(got.astype(int) - target).mean() > 10      # a toon, not the upload sent back

        requests = [json.loads(e["message"])["message"] for e in driver.get_log("performance")]
        fetched = {m["params"]["request"]["url"] for m in requests if m["method"] == "Network.requestWillBeSent"}
        network = {u for u in fetched if re.match(r"(https?|wss?)://", u)}      # not data:, blob:, chrome://
        ours = re.compile(rf"(https?|wss?)://127\.0\.0\.1:{port}/")
        assert network and all(ours.match(u) for u in network), sorted(u for u in network if not ours.match(u))
    finally:
        if driver is not None:
            driver.quit()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    assert list(cwd.iterdir()) == []                             # no flagging or cache files in the working dir
