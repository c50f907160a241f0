"""Metrics as JSON lines (`<workdir>/metrics.jsonl`), plus TensorBoard event files when tensorboard is
installed (`<workdir>/tb/`, written with tensorboard's own writer, no TensorFlow needed)."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from nets.images import atomic_write_bytes


def _tb_writer(logdir: Path) -> Any | None:
    try:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError:
        return None
    writer = EventFileWriter(str(logdir))

    def write(step: int, values: dict[str, float]) -> None:
        summary = Summary(value=[Summary.Value(tag=k, simple_value=v) for k, v in values.items()])
        writer.add_event(Event(wall_time=time.time(), step=step, summary=summary))
    write.flush, write.close = writer.flush, writer.close
    return write


class MetricLog:
    """Appends one JSON object per line: {"step": ..., "<name>": value, ...} or {"step", "event", ...}.

    On resume, lines written after the restored step by the interrupted run are dropped first, so the file
    reads as one uninterrupted run.
    """

    def __init__(self, workdir: str | Path, enabled: bool = True, resume_step: int | None = None,
                 tensorboard: bool = True):
        self.path = Path(workdir) / "metrics.jsonl"
        self.enabled = enabled
        self._f = self._tb = None
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            kept = [ln for ln in self.path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= resume_step]
            atomic_write_bytes(self.path, "".join(ln + "\n" for ln in kept).encode())
        self._f = open(self.path, "a")
        self._tb = _tb_writer(Path(workdir) / "tb") if tensorboard else None

    def write(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if math.isfinite(float(v)) else str(float(v))) for k, v in values.items()}
        self._f.write(json.dumps({"step": int(step), **clean}) + "\n")
        self._f.flush()
        if self._tb is not None:
            self._tb(int(step), {k: float(v) for k, v in values.items()})
            self._tb.flush()

    def event(self, step: int, kind: str, **info: Any) -> None:
        if self.enabled:
            self._f.write(json.dumps({"step": int(step), "event": kind, **info}) + "\n")
            self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(workdir: str | Path) -> list[dict]:
    path = Path(workdir) / "metrics.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []


def summarize(per_step: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over the steps since the last line; regularisation terms only over the steps that
    computed them (flags did_g_reg / did_d_reg)."""
    out: dict[str, float] = {}
    reg = {"reg/pl": "did_g_reg", "reg/r1": "did_d_reg"}
    for k in per_step[0]:
        if k in ("finite", "did_g_reg", "did_d_reg"):
            continue
        rows = [m[k] for m in per_step if k not in reg or m[reg[k]] > 0]
        if rows:
            out[k] = float(sum(rows) / len(rows))
    for k in ("pl_mean", "ada/p", "ada/rt"):   # running values: the latest, not the mean
        out[k] = float(per_step[-1][k])
    return out
