"""Prometheus metrics for one application, served on GET /metrics."""

import bisect
import hmac
import itertools

import asyncpg
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from . import database, state

DECISIONS = ("allowed", "denied", "anonymous", "malformed")
COUNTED_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"))
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0)


class Metrics:
    """The application's own registry, so two apps in one process (as in tests) never share counts.

    Counts are plain ints, updated on the event loop's thread and turned into metric families only
    when /metrics is scraped. prometheus_client's Counter and Histogram take a lock on every update,
    which cost about 3 us per request on the redirect path (bench/run.py).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latencies: dict[str, _Latency] = {}
        self.decisions = dict.fromkeys(DECISIONS, 0)
        self.errors: dict[str, int] = {}
        self.registry.register(_CountsCollector(self))

    def count(self, route: str, method: str, status: int, duration: float) -> None:
        """Count one request by route, method and status, and observe its duration."""
        # Any token is a valid method, so the key contains the bounded label, never the method itself.
        # Routes are patterns and statuses are few, so the keys stay few.
        method = method if method in COUNTED_METHODS else "other"
        key = (route, method, status)
        self.requests[key] = self.requests.get(key, 0) + 1

        latency = self.latencies.get(route)
        if latency is None:
            latency = self.latencies[route] = _Latency()
        latency.observe(duration)

    def count_decision(self, decision: str) -> None:
        self.decisions[decision] = self.decisions.get(decision, 0) + 1

    def count_error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def watch_pool(self, pool: asyncpg.Pool) -> None:
        self.registry.register(_PoolCollector(pool))


class _Latency:
    """One route's latency histogram: a count per bucket (the last one is +Inf) and the sum."""

    __slots__ = ("buckets", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        # A value equal to a bound belongs to that bound's bucket, as Prometheus defines "le" (less than or equal).
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, int]]:
        bounds = [*(floatToGoString(bound) for bound in LATENCY_BUCKETS), "+Inf"]
        return list(zip(bounds, itertools.accumulate(self.buckets), strict=True))


class _CountsCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self):
        metrics = self._metrics
        requests = CounterMetricFamily(
            "gateway_requests",
            "HTTP requests answered, by route and status code.",
            labels=("route", "method", "status"),
        )
        for (route, method, status), value in list(metrics.requests.items()):
            requests.add_metric((route, method, str(status)), value)
        yield requests

        latency = HistogramMetricFamily(
            "gateway_request_duration_seconds",
            "Time from receiving a request to returning its answer, by route.",
            labels=("route",),
        )
        for route, histogram in list(metrics.latencies.items()):
            latency.add_metric((route,), histogram.cumulative(), histogram.total)
        yield latency

        decisions = CounterMetricFamily(
            "gateway_media_decisions",
            "Media requests by access decision: allowed, denied (403), anonymous (401) or malformed (400).",
            labels=("decision",),
        )
        for decision, value in list(metrics.decisions.items()):
            decisions.add_metric((decision,), value)
        yield decisions

        errors = CounterMetricFamily("gateway_errors", "Errors the gateway handled, by kind.", labels=("kind",))
        for kind, value in list(metrics.errors.items()):
            errors.add_metric((kind,), value)
        yield errors


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
