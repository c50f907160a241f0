"""Metrics as JSON lines (`<workdir>/metrics.jsonl`), plus TensorBoard event files when tensorboard is
installed (`<workdir>/tb/`, written with tensorboard's own writer, no TensorFlow needed)."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from nets.images import atomic_write_bytes
from train.recipe import MetricSpec


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
    reads as one uninterrupted run; so is a torn line (a kill in the middle of a write).
    """

    def __init__(self, workdir: str | Path, enabled: bool = True, resume_step: int | None = None,
                 tensorboard: bool = True):
        self.path = Path(workdir) / "metrics.jsonl"
        self.enabled = enabled
        self._f = self._tb = None
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            kept = [json.dumps(m) for m in _parse_lines(self.path) if m.get("step", 0) <= resume_step]
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


def _parse_lines(path: Path) -> list[dict]:
    """The JSON objects of a metrics file, skipping a torn line (a process killed in the middle of a write)."""
    out = []
    for ln in path.read_text(errors="replace").splitlines():
        try:
            m = json.loads(ln)
        except json.JSONDecodeError:
            continue
        if isinstance(m, dict):
            out.append(m)
    return out


def read_metrics(workdir: str | Path) -> list[dict]:
    path = Path(workdir) / "metrics.jsonl"
    return _parse_lines(path) if path.exists() else []


def summarize(per_step: list[dict[str, float]], spec: MetricSpec) -> dict[str, float]:
    """One log line from the steps since the last one: the mean of each metric, except the recipe's gated
    metrics (mean over the steps whose flag is set, e.g. lazy regularisation terms), running values (the latest)
    and hidden flags (left out)."""
    out: dict[str, float] = {}
    for k in per_step[0]:
        if k in spec.hidden:
            continue
        if k in spec.latest:
            out[k] = float(per_step[-1][k])
            continue
        flag = spec.gated.get(k)
        rows = [m[k] for m in per_step if flag is None or m[flag] > 0]
        if rows:
            out[k] = float(sum(rows) / len(rows))
    return out
