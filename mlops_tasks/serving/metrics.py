"""Prometheus text exposition without a client library: counters, gauges, one histogram."""

from __future__ import annotations

import threading
from collections import defaultdict

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
Labels = tuple[tuple[str, str], ...]


def _fmt(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in labels
    )
    return "{" + inner + "}"


class Metrics:
    """Thread-safe metric families, rendered in the Prometheus text format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
        self._gauges: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._hist: dict[Labels, list[float]] = {}
        self._help: dict[str, tuple[str, str]] = {}

    def describe(self, name: str, kind: str, text: str) -> None:
        self._help[name] = (kind, text)

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        with self._lock:
            self._counters[name][tuple(sorted(labels.items()))] += value

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._gauges[name][tuple(sorted(labels.items()))] = value

    def observe_latency(self, seconds: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            h = self._hist.setdefault(key, [0.0] * (len(BUCKETS) + 2))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    h[i] += 1
            h[-2] += 1  # count
            h[-1] += seconds  # sum

    def counter(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._counters[name].get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name, series in sorted(self._counters.items()):
                self._header(lines, name, "counter")
                lines += [f"{name}{_fmt(k)} {v:g}" for k, v in sorted(series.items())]
            for name, series in sorted(self._gauges.items()):
                self._header(lines, name, "gauge")
                lines += [f"{name}{_fmt(k)} {v:g}" for k, v in sorted(series.items())]
            name = "mlops_request_duration_seconds"
            if self._hist:
                self._header(lines, name, "histogram")
            for key, h in sorted(self._hist.items()):
                for i, bound in enumerate(BUCKETS):
                    lines.append(f"{name}_bucket{_fmt((*key, ('le', f'{bound:g}')))} {h[i]:g}")
                lines.append(f"{name}_bucket{_fmt((*key, ('le', '+Inf')))} {h[-2]:g}")
                lines.append(f"{name}_count{_fmt(key)} {h[-2]:g}")
                lines.append(f"{name}_sum{_fmt(key)} {h[-1]:.6f}")
        return "\n".join(lines) + "\n"

    def _header(self, lines: list[str], name: str, kind: str) -> None:
        _, text = self._help.get(name, (kind, name))
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
