"""The training loop: `run(config, workdir)`.

Resumes from the latest checkpoint of the workdir when there is one (state, data position and step; the
per-step randomness is fold_in(seed, step), so an interrupted and resumed run equals an uninterrupted one).
Host work per step is only fetching the next batch and dispatching the step; metrics stay on the device until
a log / checkpoint / sample / export step, where they are fetched together and checked: a non-finite loss or
parameter stops the run before anything is written, so every checkpoint on disk is a good one.

Workdir layout: config.json, metrics.jsonl, tb/ (if tensorboard is installed), ckpt/<step>/, ema/ (EMA model
file), reals.png, fakes<step>.png.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import numpy as np

from nets import images
from nets.sampling import z_from_seeds
from nets.stylegan2 import Generator
from train.ckpt import Checkpoints, abstract_state, export_ema, load_init
from train.config import TrainConfig, format_config
from train.logs import MetricLog, summarize
from train.parallel import build_step, make_mesh, put_batch, put_replicated, replicated, to_host
from train.state import TrainState, init_state
from train.step import static_config


@dataclasses.dataclass
class RunResult:
    status: str                      # "done" or "non_finite"
    step: int                        # last step whose state is good (== cfg.steps when done)
    last_checkpoint: int | None      # latest complete checkpoint step
    workdir: Path
    state: TrainState | None         # final state (replicated arrays) when done


def _pipeline():
    """datasets.pipeline, imported here only: the one place train/ touches data."""
    try:
        from datasets import pipeline
    except ModuleNotFoundError as e:
        if e.name in ("datasets", "datasets.pipeline"):
            raise ValueError("training data needs the input pipeline datasets/pipeline.py, which this "
                             "installation lacks") from e
        raise
    return pipeline


def _default_make_iter(*args, **kwargs):
    return _pipeline().make_train_iter(*args, **kwargs)


def _open_source(cfg: TrainConfig):
    if cfg.data is None:
        raise ValueError("no training data: pass --data DIR_OR_NAME (or set data=... in the config)")
    return _pipeline().open_source(cfg.data)


def check_layout(cfg: TrainConfig, num_devices: int) -> int:
    """Per-device batch n, after checking that the batch splits evenly and fits minibatch-stddev groups."""
    if cfg.batch % num_devices:
        raise ValueError(f"batch {cfg.batch} is not divisible by the {num_devices} devices")
    n = cfg.batch // num_devices
    g = min(cfg.model.mbstd_group_size, n)
    if n % g:
        raise ValueError(f"per-device batch {n} (= batch {cfg.batch} / {num_devices} devices) is not a multiple "
                         f"of the minibatch-stddev group {g}; change batch or model.mbstd_group_size")
    return n


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def _resume_config(cfg: TrainConfig, saved: TrainConfig, where: Path) -> TrainConfig:
    """The config to continue with: the new run-level settings (steps, intervals, ...) on the saved recipe.
    Anything the compiled step depends on must be unchanged."""
    cand = cfg.replace(model=saved.model) if cfg.finetune.init_from else cfg
    a, b = _flat(static_config(saved).to_dict()), _flat(static_config(cand).to_dict())
    diffs = [f"{k}: {a[k]!r} -> {b[k]!r}" for k in a if a[k] != b.get(k)]
    if diffs:
        raise ValueError(f"{where} holds a run with a different training recipe ({'; '.join(diffs)}); use a new "
                         f"workdir, or the saved config ({where / 'config.json'})")
    return cand.replace(finetune=dataclasses.replace(cand.finetune, init_from=saved.finetune.init_from))


def run(cfg: TrainConfig, workdir: str | Path, *, source: Any = None, make_iter: Callable | None = None,
        devices: Sequence[jax.Device] | None = None, progress: bool = True,
        log: Callable[[str], None] = print) -> RunResult:
    """Train (or resume) in `workdir`. `source`/`make_iter` default to datasets.pipeline on `cfg.data`."""
    workdir = Path(workdir).absolute()
    devices = tuple(devices if devices is not None else jax.devices())
    check_layout(cfg, len(devices))
    src = source if source is not None else _open_source(cfg)         # fail fast on data problems
    make_iter = make_iter or _default_make_iter
    workdir.mkdir(parents=True, exist_ok=True)
    ckpts = Checkpoints(workdir / "ckpt", keep=cfg.keep)
    try:
        return _run(cfg, workdir, src, make_iter, devices, ckpts, progress, log)
    finally:
        ckpts.close()


def _run(cfg: TrainConfig, workdir: Path, src: Any, make_iter: Callable, devices: tuple, ckpts: Checkpoints,
         progress: bool, log: Callable[[str], None]) -> RunResult:
    from tqdm.auto import tqdm

    pidx, pcount = jax.process_index(), jax.process_count()
    main = pidx == 0
    mesh = make_mesh(devices)
    local = [d for d in devices if d.process_index == pidx]
    data_state = None
    start = ckpts.latest_step()
    if start is not None:
        saved = TrainConfig.from_dict(ckpts.read_config(start))
        cfg = _resume_config(cfg, saved, workdir)
        state, data_state, _ = ckpts.restore(abstract_state(cfg), replicated(mesh), start)
        log(f"resuming {workdir} from step {start}")
    else:
        start = 0
        g = d = ema = None
        if cfg.finetune.init_from:
            cfg, g, d, ema, note = load_init(cfg.finetune.init_from, cfg)
            log(note)
        state = put_replicated(to_host(init_state(cfg, jax.random.key(cfg.seed), g, d, ema)), mesh)
    n = check_layout(cfg, len(devices))
    if main:
        images.atomic_write_bytes(workdir / "config.json", format_config(cfg).encode())

    it = make_iter(src, global_batch=cfg.batch, seed=cfg.seed, num_local_devices=len(local), process_index=pidx,
                   process_count=pcount, flip=cfg.flip)
    if data_state is not None:
        it.set_state(data_state)
    step_fn = build_step(static_config(cfg), cfg.parallel, devices)
    render = _sample_renderer(cfg) if main and cfg.sample_every else None
    m = cfg.model
    want = (len(local), n, m.resolution, m.resolution, m.img_channels)

    metrics_log = MetricLog(workdir, enabled=main, resume_step=start)
    pbar = tqdm(total=cfg.steps, initial=start, unit="step", disable=not (progress and main), dynamic_ncols=True)
    pending: list[dict] = []       # device metrics not yet fetched
    window: list[dict] = []        # fetched metrics since the last log line
    t_last, s_last = time.time(), start
    status, good = "done", start
    try:
        for s in range(start, cfg.steps):
            batch = np.asarray(next(it)["image"], np.float32)
            if batch.shape != want:
                raise ValueError(f"the data yields image batches of shape {batch.shape}; this run needs {want} "
                                 f"([local devices, batch per device, R, R, C]); check model.resolution")
            if s == 0 and main:
                grid = images.make_grid(images.to_uint8(batch.reshape((-1,) + want[2:])))
                images.write_png(workdir / "reals.png", grid)
            data_pos = it.get_state()  # the position after this step's batch, saved with this step's checkpoint
            state, metrics = step_fn(state, put_batch(batch, mesh, cfg.parallel))
            pending.append(metrics)
            pbar.update(1)
            done = s + 1
            last = done == cfg.steps
            do_log = done % cfg.log_every == 0 or last
            do_ckpt = done % cfg.ckpt_every == 0 or last
            do_sample = render is not None and (done % cfg.sample_every == 0 or last)
            do_export = (cfg.export_every and done % cfg.export_every == 0) or last
            if not (do_log or do_ckpt or do_sample or do_export):
                continue
            fetched = to_host(pending)
            pending = []
            bad = [done - len(fetched) + i + 1 for i, f in enumerate(fetched) if not f["finite"]]  # 1-based
            window += fetched
            if bad:
                status = "non_finite"
                metrics_log.event(bad[0], "non_finite", last_checkpoint=ckpts.latest_step(),
                                  message="non-finite loss or parameters; stopped, nothing written after it")
                log(f"step {bad[0]}: non-finite loss or parameters; stopping. The latest checkpoint "
                    f"(step {ckpts.latest_step()}) is intact.")
                break
            good = done
            if do_log:
                elapsed = time.time() - t_last
                vals = summarize(window)
                vals.update({"kimg": done * cfg.batch / 1000, "img_per_s": (done - s_last) * cfg.batch / elapsed,
                             "sec_per_step": elapsed / (done - s_last)})
                metrics_log.write(done, vals)
                pbar.set_postfix({"img/s": f"{vals['img_per_s']:.1f}", "G": f"{vals['loss/G']:.3f}",
                                  "D": f"{vals['loss/D']:.3f}", "p": f"{vals['ada/p']:.3f}"}, refresh=False)
                window, t_last, s_last = [], time.time(), done
            if do_ckpt:
                ckpts.save(done, state, data_pos, cfg)
            if do_export or do_sample:
                ema = to_host(state.g_ema)
                if do_export and main:
                    export_ema(workdir / "ema", ema, cfg, done)
                if do_sample:
                    images.write_png(workdir / f"fakes{done:06d}.png", render(ema))
    finally:
        pbar.close()
        metrics_log.close()
        if hasattr(it, "close"):   # not in the contract, but a prefetching iterator may hold threads
            it.close()
    ckpts.wait()
    return RunResult(status, good, ckpts.latest_step(), workdir, state if status == "done" else None)


def _sample_renderer(cfg: TrainConfig) -> Callable[[dict], np.ndarray]:
    """EMA generator on fixed seeds 0..k-1 with constant noise -> one uint8 grid. Compiled once per run."""
    z = z_from_seeds(list(range(cfg.sample_seeds)), cfg.model.z_dim)
    fwd = jax.jit(lambda v, z: Generator(cfg.model).apply(v, z, noise_mode="const"))
    dev = jax.local_devices()[0]

    def render(ema: dict) -> np.ndarray:
        imgs = fwd(jax.device_put(ema, dev), jax.device_put(z, dev))
        return images.make_grid(images.to_uint8(imgs))
    return render


def read_config(workdir: str | Path) -> TrainConfig:
    return TrainConfig.from_dict(json.loads((Path(workdir) / "config.json").read_text()))
