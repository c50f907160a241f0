"""The training loop for every family: `run(config, workdir)`.

Resumes from the latest checkpoint of the workdir when there is one (state, data position and step; the
per-step randomness is fold_in(seed, step), so an interrupted and resumed run equals an uninterrupted one).
Host work per step is only fetching the next batch and dispatching the step; metrics stay on the device until
a log / checkpoint / sample / export step, where they are fetched together and checked: a non-finite loss or
parameter stops the run before anything is written, so every checkpoint on disk is a good one.

Everything about the model comes from the family's recipe (train/recipe.py): which data it reads, its state, its
step, its preview grid and its model file. Workdir layout: config.json, metrics.jsonl, tb/ (if tensorboard is
installed), ckpt/<step>/, ema/ (the exported model file), reals.png, fakes<step>.png.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import numpy as np

from datasets import lock, pipeline
from nets import images
from train.ckpt import CheckpointUnreadable, Checkpoints, abstract_state, export, read_pretrained
from train.config import TrainConfig, format_config
from train.logs import MetricLog, summarize
from train.parallel import build_step, make_mesh, put_batch, put_replicated, replicated, to_host


@dataclasses.dataclass
class RunResult:
    status: str                      # "done" or "non_finite"
    step: int                        # last step whose state is good (== cfg.steps when done)
    last_checkpoint: int | None      # latest complete checkpoint step
    workdir: Path
    state: Any | None                # final state (replicated arrays) when done


def check_layout(cfg: TrainConfig, num_devices: int) -> int:
    """Per-device batch n, after checking that the batch splits evenly and suits the recipe."""
    if cfg.batch % num_devices:
        raise ValueError(f"batch {cfg.batch} is not divisible by the {num_devices} devices")
    n = cfg.batch // num_devices
    try:
        cfg.recipe.check_batch(cfg.hparams, n)
    except ValueError as e:
        raise ValueError(f"batch {cfg.batch} on {num_devices} devices: {e}") from None
    return n


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def resume_config(cfg: TrainConfig, saved: TrainConfig, where: Path) -> TrainConfig:
    """The config to continue with: the new run-level settings (steps, intervals, ...) on the saved section.
    The section (what the compiled step depends on) must be unchanged, except the fields a fine-tune's init
    took from its pretrained model."""
    if cfg.family != saved.family:
        raise ValueError(f"{where} holds a {saved.family} run; this config is for {cfg.family}")
    hp = cfg.hparams
    if cfg.init_from:
        hp = dataclasses.replace(hp, **{f: getattr(saved.hparams, f) for f in cfg.recipe.init_fields})
    a, b = _flat(dataclasses.asdict(saved.hparams)), _flat(dataclasses.asdict(hp))
    diffs = [f"{k}: {a[k]!r} -> {b[k]!r}" for k in a if a[k] != b.get(k)]
    if diffs:
        raise ValueError(f"{where} holds a run with a different training recipe ({'; '.join(diffs)}); use a new "
                         f"workdir, or the saved config ({where / 'config.json'})")
    return cfg.replace(hparams=hp, init_from=saved.init_from)


def _check_shapes(got: dict, want: dict, lead: tuple[int, ...] = ()) -> None:
    """got / want: {batch key: shape}; `lead` is prepended to every wanted shape."""
    for key, shape in want.items():
        if tuple(got.get(key, ())) != lead + tuple(shape):
            layout = "[local devices, batch per device, *example]" if lead else "per example"
            raise ValueError(f"the data yields {key!r} of shape {got.get(key)}; this run needs "
                             f"{lead + tuple(shape)} ({layout}); check the model config (e.g. model.resolution) "
                             f"against the dataset")


def _preview(batch: dict) -> np.ndarray:
    """uint8 grid of the batch's images, one row per image-like entry ([L,n,H,W,C], C = 1 or 3)."""
    imgs = [images.to_uint8(v.reshape((-1,) + v.shape[2:])) for _, v in sorted(batch.items())
            if np.ndim(v) == 5 and v.shape[-1] in (1, 3)]
    if len(imgs) == 1 or len({x.shape for x in imgs}) > 1:
        return images.make_grid(imgs[0])
    return images.make_grid(np.stack(imgs))                                       # [rows, N, H, W, C]


def run(cfg: TrainConfig, workdir: str | Path, *, data: Any = None, make_iter: Callable | None = None,
        devices: Sequence[jax.Device] | None = None, progress: bool = True,
        log: Callable[[str], None] = print) -> RunResult:
    """Train (or resume) in `workdir`. `data` (default `cfg.data`): a dataset folder or tfds name, a random-access
    source, or {split: source}; `make_iter` (default datasets.pipeline.make_batches) turns it into batches.

    One trainer per workdir: the run holds a lock on it (process 0 of a multi-process job, for the job), and a
    second `run` on the same workdir refuses at once, naming the holder. Nothing is written to the workdir before
    the data, the config and the initial (or resumed) state have been checked."""
    workdir = Path(workdir).absolute()
    devices = tuple(devices if devices is not None else jax.devices())
    check_layout(cfg, len(devices))
    data = data if data is not None else cfg.data
    if data is None:
        raise ValueError("no training data: pass --data DIR_OR_NAME (or set data=... in the config)")
    pidx = jax.process_index()
    local = [d for d in devices if d.process_index == pidx]
    it = (make_iter or pipeline.make_batches)(                           # opens the data: fails fast
        data, cfg.recipe.features(cfg.hparams), global_batch=cfg.batch, seed=cfg.seed,
        num_local_devices=len(local), process_index=pidx, process_count=jax.process_count(), flip=cfg.flip)
    try:
        workdir.parent.mkdir(parents=True, exist_ok=True)
        with lock.hold(workdir, "gafu train", note=log) if pidx == 0 else contextlib.nullcontext():
            return _run(cfg, workdir, it, devices, local, progress, log, data)
    finally:
        if hasattr(it, "close"):   # a prefetching iterator holds threads
            it.close()


def _resume(cfg: TrainConfig, workdir: Path, ckpts: Checkpoints, mesh, log) -> tuple | None:
    """(config, state, data position, step) of the newest readable checkpoint; None when there is none.

    An unreadable checkpoint (truncated or corrupt files, non-finite values) is moved to ckpt-unreadable/ with a
    one-line note, and the previous one is tried. A config that does not fit the saved run is the caller's error."""
    steps = sorted(ckpts.all_steps(), reverse=True)
    for step in steps:
        try:
            rcfg = resume_config(cfg, TrainConfig.from_dict(ckpts.read_config(step)), workdir)
            state, data_state, _ = ckpts.restore(abstract_state(rcfg), replicated(mesh), step)
        except CheckpointUnreadable as e:
            aside = ckpts.set_aside(step) if jax.process_index() == 0 else "ckpt-unreadable/"
            log(f"checkpoint of step {step} is unreadable ({e}); moved it to {aside} and trying the previous one")
            continue
        log(f"resuming {workdir} from step {step}")
        return rcfg, state, data_state, step
    if steps:
        raise ValueError(f"{workdir}: none of its {len(steps)} checkpoints is readable (moved to "
                         f"{workdir / 'ckpt-unreadable'}); start a new workdir or restore them by hand")
    return None


def _start(cfg: TrainConfig, workdir: Path, ckpts: Checkpoints | None, mesh, log) -> tuple:
    """(config, replicated state, data position or None, first step): resumed, fine-tuned or fresh."""
    resumed = _resume(cfg, workdir, ckpts, mesh, log) if ckpts is not None else None
    if resumed is not None:
        return resumed
    pretrained = read_pretrained(cfg.init_from) if cfg.init_from else None
    hp, state, note = cfg.recipe.init(cfg.hparams, jax.random.key(cfg.seed), pretrained)
    if note:
        log(note)
    return cfg.replace(hparams=hp), put_replicated(to_host(state), mesh), None, 0


def _run(cfg: TrainConfig, workdir: Path, it: Any, devices: tuple, local: list, progress: bool,
         log: Callable[[str], None], data: Any = None) -> RunResult:
    ckpts = Checkpoints(workdir / "ckpt", keep=cfg.keep) if (workdir / "ckpt").is_dir() else None
    try:
        mesh = make_mesh(devices)
        cfg, state, data_state, start = _start(cfg, workdir, ckpts, mesh, log)
        n = check_layout(cfg, len(devices))
        if hasattr(it, "batch_shapes"):           # check the data before anything compiles or is written
            _check_shapes(it.batch_shapes(), cfg.recipe.example_shapes(cfg.hparams))
        if ckpts is None:
            workdir.mkdir(exist_ok=True)
            ckpts = Checkpoints(workdir / "ckpt", keep=cfg.keep)
        if jax.process_index() == 0:
            images.atomic_write_bytes(workdir / "config.json", format_config(cfg).encode())
        return _train(cfg, workdir, it, mesh, local, n, ckpts, state, data_state, start, progress, log, data)
    finally:
        if ckpts is not None:
            ckpts.close()


def step_programs(cfg: TrainConfig, devices: tuple) -> Callable[[int], Callable]:
    """Step number -> the mapped step to call at it. One program for every step when the family has no lazy
    phases or cfg.lazy_dispatch is 'device' (lax.cond on the state's step); else one per pattern of due phases,
    each built (and compiled) the first time it is due: NV's intervals give two or three."""
    rec, hp = cfg.recipe, cfg.hparams
    if rec.due is None or cfg.lazy_dispatch == "device":
        one = build_step(rec.step, hp, cfg.parallel, devices)
        return lambda s: one
    programs: dict[tuple[str, ...], Callable] = {}

    def at(s: int) -> Callable:
        due = tuple(rec.due(hp, s))
        if due not in programs:
            programs[due] = build_step(rec.step, hp, cfg.parallel, devices, due)
        return programs[due]
    return at


def _train(cfg: TrainConfig, workdir: Path, it: Any, mesh, local: list, n: int, ckpts: Checkpoints, state: Any,
           data_state: dict | None, start: int, progress: bool, log: Callable[[str], None],
           data: Any = None) -> RunResult:
    """The step loop (the config and state are checked; the workdir's config.json is written). `data` feeds the
    config's `metrics` at every export."""
    from tqdm.auto import tqdm

    main = jax.process_index() == 0
    rec, hp = cfg.recipe, cfg.hparams
    want = rec.example_shapes(hp)
    if data_state is not None:
        it.set_state(data_state)
    step_at = step_programs(cfg, tuple(mesh.devices.flat))
    seed = put_replicated(np.uint32(cfg.seed), mesh)
    frozen = rec.frozen(hp)
    frozen = None if frozen is None else put_replicated(frozen, mesh)
    sampling = main and cfg.sample_every > 0
    export_metrics = None
    if cfg.metrics and main:
        from train.eval.hook import ExportMetrics
        export_metrics = ExportMetrics.create(cfg, data, log)

    metrics_log = MetricLog(workdir, enabled=main, resume_step=start)
    pbar = tqdm(total=cfg.steps, initial=start, unit="step", disable=not (progress and main), dynamic_ncols=True)
    pending: list[dict] = []       # device metrics not yet fetched
    window: list[dict] = []        # fetched metrics since the last log line
    fixed = None                   # this run's first batch (host), for recipes that preview inputs
    t_last, s_last = time.time(), start
    status, good = "done", start
    try:
        for s in range(start, cfg.steps):
            raw = next(it)
            batch = {k: np.asarray(raw[k]) for k in want if k in raw}
            _check_shapes({k: v.shape for k, v in batch.items()}, want, (len(local), n))
            if fixed is None:
                fixed = {k: v.reshape((-1,) + v.shape[2:]) for k, v in batch.items()}
                if s == 0 and main:
                    images.write_png(workdir / "reals.png", _preview(batch))
            data_pos = it.get_state()  # the position after this step's batch, saved with this step's checkpoint
            state, metrics = step_at(s)(state, put_batch(batch, mesh, cfg.parallel), seed, frozen)
            pending.append(metrics)
            pbar.update(1)
            done = s + 1
            last = done == cfg.steps
            do_log = done % cfg.log_every == 0 or last
            do_ckpt = done % cfg.ckpt_every == 0 or last
            do_sample = sampling and (done % cfg.sample_every == 0 or last)
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
                vals = summarize(window, rec.metrics)
                vals.update({"kimg": done * cfg.batch / 1000, "img_per_s": (done - s_last) * cfg.batch / elapsed,
                             "sec_per_step": elapsed / (done - s_last)})
                metrics_log.write(done, vals)
                pbar.set_postfix({"img/s": f"{vals['img_per_s']:.1f}",
                                  **{k: f"{vals[m]:.3f}" for k, m in rec.metrics.progress.items() if m in vals}},
                                 refresh=False)
                window, t_last, s_last = [], time.time(), done
            if do_ckpt:
                ckpts.save(done, state, data_pos, cfg)
            if do_export or do_sample:
                pub = to_host(rec.published(hp, state))
                if do_export and main:
                    export(workdir / "ema", cfg, pub, done, fixed)
                    if export_metrics is not None:
                        export_metrics(workdir / "ema", workdir, done, done * cfg.batch / 1000, metrics_log.write)
                if do_sample:
                    images.write_png(workdir / f"fakes{done:06d}.png", rec.sample(hp, pub, fixed, cfg.sample_seeds))
    finally:
        pbar.close()
        metrics_log.close()
    ckpts.wait()
    return RunResult(status, good, ckpts.latest_step(), workdir, state if status == "done" else None)
