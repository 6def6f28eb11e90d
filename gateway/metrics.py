"""Prometheus metrics for one application, served on GET /metrics."""

import hmac

import asyncpg
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from . import database, state

DECISIONS = ("allowed", "denied", "anonymous", "malformed")
COUNTED_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"))
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0)


class Metrics:
    """The application's own registry, so two apps in one process (as in tests) never share counts."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "gateway_requests",
            "HTTP requests answered, by route and status code.",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "gateway_request_duration_seconds",
            "Time from receiving a request to returning its answer, by route.",
            ("route",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.decisions = Counter(
            "gateway_media_decisions",
            "Media requests by access decision: allowed, denied (403), anonymous (401) or malformed (400).",
            ("decision",),
            registry=self.registry,
        )
        self.errors = Counter(
            "gateway_errors",
            "Errors the gateway handled, by kind.",
            ("kind",),
            registry=self.registry,
        )
        # labels() takes a lock and checks its arguments on every call; the children it returns are kept here.
        # Routes are patterns and methods and statuses are few, so these stay small.
        self._request_counters: dict[tuple[str, str, int], Counter] = {}
        self._latencies: dict[str, Histogram] = {}
        self._decision_counters = {decision: self.decisions.labels(decision) for decision in DECISIONS}
        self._error_counters: dict[str, Counter] = {}

    def count(self, route: str, method: str, status: int, duration: float) -> None:
        """Count one request by route, method and status, and observe its duration."""
        # Any token is a valid method, so the key contains the bounded label, never the method itself.
        method = method if method in COUNTED_METHODS else "other"
        counter = self._request_counters.get((route, method, status))
        if counter is None:
            counter = self._request_counters[route, method, status] = self.requests.labels(route, method, str(status))
        counter.inc()

        latency = self._latencies.get(route)
        if latency is None:
            latency = self._latencies[route] = self.latency.labels(route)
        latency.observe(duration)

    def count_decision(self, decision: str) -> None:
        counter = self._decision_counters.get(decision)
        if counter is None:
            counter = self._decision_counters[decision] = self.decisions.labels(decision)
        counter.inc()

    def count_error(self, kind: str) -> None:
        counter = self._error_counters.get(kind)
        if counter is None:
            counter = self._error_counters[kind] = self.errors.labels(kind)
        counter.inc()

    def watch_pool(self, pool: asyncpg.Pool) -> None:
        self.registry.register(_PoolCollector(pool))


class _PoolCollector(Collector):
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    def collect(self):
        size = self._pool.get_size()
        in_use = size - self._pool.get_idle_size()

        yield _gauge("gateway_db_pool_connections", "Open connections in the PostgreSQL pool.", size)
        yield _gauge("gateway_db_pool_in_use", "Pool connections currently lent to a request.", in_use)
        yield _gauge("gateway_db_pool_max", "Maximum size of the PostgreSQL pool.", self._pool.get_max_size())
        yield _gauge(
            "gateway_db_pool_waiting", "Requests waiting for a free pool connection.", database.waiting(self._pool)
        )

    def describe(self):
        return []


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


METRICS = web.AppKey("metrics", Metrics)


async def handle_metrics(request: web.Request) -> web.Response:
    expected = request.app[state.SETTINGS].metrics_token
    if expected is not None and not _authorized(request, expected):
        return web.json_response(
            {"error": "unauthenticated", "message": "Send the METRICS_TOKEN value as an Authorization: Bearer token."},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="metrics"', "Cache-Control": "no-store"},
        )

    # The Accept header picks the classic text format or OpenMetrics, as Prometheus negotiates it.
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encode(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})


def _authorized(request: web.Request, expected: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), expected.encode("ascii"))
