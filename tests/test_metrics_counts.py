"""The lock-free request counts expose exactly what prometheus_client's own Counter and Histogram would."""

import random

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import LATENCY_BUCKETS, Metrics


def samples(registry: CollectorRegistry, family_name: str) -> dict[tuple, float]:
    """Return {(sample name, sorted labels): value} for one family, leaving out the _created samples."""
    exposition = generate_latest(registry).decode()
    found = {}
    for family in text_string_to_metric_families(exposition):
        if family.name != family_name:
            continue
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_latency_matches_prometheus_histogram():
    metrics = Metrics()
    reference_registry = CollectorRegistry()
    reference = Histogram(
        "gateway_request_duration_seconds",
        "reference",
        ("route",),
        buckets=LATENCY_BUCKETS,
        registry=reference_registry,
    )
    durations = [random.uniform(0, 30) for _ in range(200)] + list(LATENCY_BUCKETS) + [0.0, 0.0049999, 0.0050001]

    for number, seconds in enumerate(durations):
        route = "/media/{tail}" if number % 3 else "/healthz"
        metrics.count(route, "GET", 302, seconds)
        reference.labels(route).observe(seconds)

    ours = samples(metrics.registry, "gateway_request_duration_seconds")
    expected = samples(reference_registry, "gateway_request_duration_seconds")
    assert ours.keys() == expected.keys()
    for name, value in expected.items():
        assert abs(ours[name] - value) < 1e-9, name


def test_requests_match_prometheus_counter():
    metrics = Metrics()
    reference_registry = CollectorRegistry()
    reference = Counter("gateway_requests", "reference", ("route", "method", "status"), registry=reference_registry)
    requests = [("/media/{tail}", "GET", 302)] * 5 + [("/media/{tail}", "PURGE", 405)] * 2 + [("unmatched", "GET", 404)]

    for route, method, status in requests:
        metrics.count(route, method, status, 0.001)
        reference.labels(route, "other" if method == "PURGE" else method, str(status)).inc()

    assert samples(metrics.registry, "gateway_requests") == samples(reference_registry, "gateway_requests")


def test_decisions_start_at_zero_and_count():
    metrics = Metrics()

    metrics.count_decision("denied")
    metrics.count_decision("denied")
    metrics.count_error("deadline")

    decisions = samples(metrics.registry, "gateway_media_decisions")
    assert decisions[("gateway_media_decisions_total", (("decision", "denied"),))] == 2
    assert decisions[("gateway_media_decisions_total", (("decision", "allowed"),))] == 0
    errors = samples(metrics.registry, "gateway_errors")
    assert errors == {("gateway_errors_total", (("kind", "deadline"),)): 1}
