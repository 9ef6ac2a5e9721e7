"""Reading the /metrics exposition in tests."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, dict(s.labels), s.value) for family in text_string_to_metric_families(text) for s in family.samples]


def value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels`` (0 when there are none)."""
    return sum(v for n, lab, v in samples(text) if n == name and all(lab.get(k) == want for k, want in labels.items()))


def has(text: str, name: str, **labels: str) -> bool:
    return any(n == name and all(lab.get(k) == want for k, want in labels.items()) for n, lab, _ in samples(text))
