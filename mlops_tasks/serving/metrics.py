"""Prometheus text exposition without a client library: counters, gauges, one histogram; and
`ResponseCounter`, the ASGI middleware that counts every response by route and status code."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    """A label value as the text format wants it: backslash, quote and newline escaped."""
    value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _fmt(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
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

    def snapshot(self) -> dict[str, Any]:
        """Every series as plain JSON values (what a worker shares with the others)."""
        with self._lock:
            return {
                "counters": {n: _pairs(s) for n, s in self._counters.items()},
                "gauges": {n: _pairs(s) for n, s in self._gauges.items()},
                "hist": [[list(k), list(h)] for k, h in self._hist.items()],
            }

    def absorb(self, snap: dict[str, Any], **gauge_labels: str) -> None:
        """Add another worker's `snapshot`: counters and histograms add up; gauges (a state of
        one process, like the version it serves) are kept apart by `gauge_labels`."""
        extra = tuple(gauge_labels.items())
        with self._lock:
            for name, series in snap["counters"].items():
                for key, value in series:
                    self._counters[name][tuple(map(tuple, key))] += value
            for name, series in snap["gauges"].items():
                for key, value in series:
                    labels = tuple(sorted((*map(tuple, key), *extra)))
                    self._gauges[name][labels] = value
            for key, h in snap["hist"]:
                mine = self._hist.setdefault(tuple(map(tuple, key)), [0.0] * (len(BUCKETS) + 2))
                for i, v in enumerate(h):
                    mine[i] += v

    def empty_copy(self) -> Metrics:
        """A Metrics with the same descriptions and no series (to merge workers into)."""
        out = Metrics()
        out._help = dict(self._help)
        return out

    def _header(self, lines: list[str], name: str, kind: str) -> None:
        _, text = self._help.get(name, (kind, name))
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]


def _pairs(series: dict[Labels, float]) -> list[list[Any]]:
    return [[list(k), v] for k, v in series.items()]


HTTP_RESPONSES = "mlops_http_responses_total"
UNMATCHED = "<unmatched>"  # the route label of a path no route matches (404s)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


class ResponseCounter:
    """Counts every HTTP response in `mlops_http_responses_total{route,method,code}`.

    `route` is the matched route's template (`/v1/models/{name}`), never the raw path, and
    `<unmatched>` when no route matches, so the number of series stays bounded whatever paths
    clients send; `method` is one of the standard methods or `other`. Answers given by inner
    middlewares (401, 413) and unhandled exceptions (500) are counted too: this middleware sits
    outside them and counts a 500 for an exception that escapes before a response started."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Callable[[], list[Any]]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes
        metrics.describe(
            HTTP_RESPONSES, "counter", "HTTP responses by route template, method and status code"
        )

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status: list[int] = []

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        except BaseException:
            if not status:
                status.append(500)
            raise
        finally:
            method = scope.get("method", "")
            self.metrics.inc(
                HTTP_RESPONSES,
                route=self.template(scope),
                method=method if method in _METHODS else "other",
                code=str(status[0]) if status else "none",  # the client left before an answer
            )

    def template(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:  # answered before routing (401, 413): match the path ourselves
            from starlette.routing import Match

            partial = None
            for candidate in self.routes():
                match, _ = candidate.matches(scope)
                if match == Match.FULL:
                    route = candidate
                    break
                if match == Match.PARTIAL and partial is None:
                    partial = candidate
            route = route or partial
        path = getattr(route, "path", None)
        return str(path) if path else UNMATCHED
