"""Small helpers shared by the fault, load and observability tests."""

from prometheus_client.parser import text_string_to_metric_families


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def metric_value(exposition: str, name: str, **labels: str) -> float | None:
    """Return the sample `name` with exactly these label values from a Prometheus text exposition."""
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items()):
                return sample.value
    return None


async def scrape(client, token: str | None = None) -> str:
    headers = bearer(token) if token else {}
    response = await client.get("/metrics", headers=headers)
    assert response.status == 200
    return await response.text()
