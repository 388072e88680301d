"""Prometheus metrics of the agent server, in a registry owned by one app (no global state).

``prometheus_client``'s default registry is process-global: two apps in one process (tests, or a
model server next to the agent server) would collide on metric names. Each :class:`ServerMetrics`
owns a ``CollectorRegistry``; ``GET /metrics`` renders only it.

Routes are labelled by their template (``/v1/chat/completions``), and unknown paths as ``other``,
so a scanner probing random URLs cannot blow up the label cardinality.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from regrpo.agent.loop import Result

__all__ = ["CONTENT_TYPE", "ServerMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The ``Content-Type`` of the text exposition format."""

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class ServerMetrics:
    """Counters, gauges and histograms of one server instance."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "regrpo_http_requests",
            "HTTP requests by route, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "regrpo_http_request_duration_seconds",
            "Time to the end of the response (streams included), by route.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("regrpo_http_requests_in_flight", "HTTP requests being handled.", registry=r)
        self.episodes_running = Gauge("regrpo_episodes_running", "Agent episodes running now.", registry=r)
        self.episodes_queued = Gauge(
            "regrpo_episodes_queued", "Episodes waiting for a free slot.", registry=r
        )
        self.episodes = Counter(
            "regrpo_episodes",
            "Finished episodes by status (answered, max_steps, error, timeout).",
            ["status"],
            registry=r,
        )
        self.steps = Counter("regrpo_agent_steps", "Agent steps (model turns).", registry=r)
        self.verifier_errors = Counter(
            "regrpo_verifier_errors", "Episodes the server's verifier failed to score.", registry=r
        )
        self.tool_calls = Counter("regrpo_tool_calls", "Tool calls made by the agent.", registry=r)
        self.tool_failures = Counter("regrpo_tool_failures", "Tool calls that failed.", registry=r)
        self.reflections = Counter("regrpo_reflections", "Reflections written (valid or not).", registry=r)
        self.rejections = Counter(
            "regrpo_rejections",
            "Requests turned away before running: 429 overloaded, 503 shutting down / engine unavailable.",
            ["status", "reason"],
            registry=r,
        )

    def record_episode(self, result: Result) -> None:
        """Count a finished episode's status and usage."""
        self.episodes.labels(result.status).inc()
        usage = result.usage
        self.steps.inc(usage.steps)
        self.tool_calls.inc(usage.tool_calls)
        self.tool_failures.inc(usage.tool_failures)
        self.reflections.inc(usage.reflections)

    def reject(self, status: int, reason: str) -> None:
        self.rejections.labels(str(status), reason).inc()

    def render(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)
