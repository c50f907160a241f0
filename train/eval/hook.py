"""Training's `metrics` (NV's --metrics): the run config's metrics computed on every exported model file.

Made once before the first step (so a missing Inception file or an unknown metric stops the run before it
trains), then called after each export on the first process: results go to `<workdir>/metric-<name>.jsonl` (NV's
run-folder files, with the step and kimg added) and to the metrics writer (metrics.jsonl, TensorBoard).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from train.eval import fakes, run


@dataclasses.dataclass
class ExportMetrics:
    specs: list
    data: Any
    inception: str | None
    any_inception: bool
    vgg16: str | None
    any_vgg16: bool
    split: str | None
    log: Callable[[str], None]
    _ev: run.Evaluator | None = None

    @classmethod
    def create(cls, cfg, data: Any, log: Callable[[str], None] = print) -> "ExportMetrics":
        """From a TrainConfig: its `metrics`, `metrics_inception` / `metrics_vgg16` and their `metrics_any_*`; the
        reals are the family's training split (`split`) for StyleGAN2, the test splits for translation families."""
        from nets import inception_weights, nv_vgg16_weights

        specs = run.parse_metrics(cfg.metrics)
        run.check_family(cfg.family, specs, "this run")
        if run.needs_inception(specs):
            inception_weights.find_weights(cfg.metrics_inception)   # fail before training, not at the export
        if run.needs_vgg16(specs):
            nv_vgg16_weights.find_weights(cfg.metrics_vgg16)
        split = getattr(cfg.hparams, "split", None) if cfg.family == "stylegan2" else None
        return cls(specs, data, cfg.metrics_inception, cfg.metrics_any_inception, cfg.metrics_vgg16,
                   cfg.metrics_any_vgg16, split, log)

    def __call__(self, model_path: Path, workdir: Path, step: int, kimg: float, write: Callable) -> list[dict]:
        model = fakes.load(str(model_path))
        if self._ev is None:
            self._ev = run.make_evaluator(model, self.data, self.specs, inception=self.inception,
                                          any_inception=self.any_inception, vgg16=self.vgg16,
                                          any_vgg16=self.any_vgg16, split=self.split, progress=False,
                                          log=self.log)
        self._ev.model = model                                       # reals and the embedder are kept

        def record(spec, rec):
            rec.update(step=int(step), kimg=kimg)
            run.append_jsonl(Path(workdir) / f"metric-{spec.name}.jsonl", rec)

        records = run.evaluate(self._ev, self.specs, record)
        values = {k: v for r in records for k, v in r["results"].items()}
        write(step, values)
        self.log(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in values.items()))
        return records
