"""Drift and skew: how far a new span's data moved from what came before, in TFDV's measures.

Drift compares a span's training statistics with the span before it; skew compares a span's
validation statistics with its own training statistics. The features, measures (L-infinity
distance for categorical features, Jensen-Shannon divergence for numeric ones) and thresholds
are the reviewed schema's `drift_comparator` and `skew_comparator`, not code. Every distance
TFDV measured becomes a row, past its threshold or not, so that a run records all of them.
"""

from __future__ import annotations

from tensorflow_metadata.proto.v0 import anomalies_pb2

from components.validate.failures import ValidationFailed

MEASURES = {
    anomalies_pb2.DriftSkewInfo.Measurement.L_INFTY: "L-infinity",
    anomalies_pb2.DriftSkewInfo.Measurement.JENSEN_SHANNON_DIVERGENCE: "Jensen-Shannon",
    anomalies_pb2.DriftSkewInfo.Measurement.NORMALIZED_ABSOLUTE_DIFFERENCE: "normalized abs diff",
}
COLUMNS = ("span", "kind", "against", "feature", "measure", "threshold", "value")


def rows(span: str, kind: str, against: str, anomalies: anomalies_pb2.Anomalies) -> list[dict]:
    """One row per measured distance of `kind` ("drift" or "skew") in TFDV's answer."""
    found = []
    for info in anomalies.drift_skew_info:
        measurements = info.drift_measurements if kind == "drift" else info.skew_measurements
        for measurement in measurements:
            found.append(
                {
                    "span": span,
                    "kind": kind,
                    "against": against,
                    "feature": ".".join(info.path.step),
                    "measure": MEASURES.get(measurement.type, str(measurement.type)),
                    "threshold": round(float(measurement.threshold), 6),
                    "value": round(float(measurement.value), 6),
                    "drifted": float(measurement.value) > float(measurement.threshold),
                }
            )
    return sorted(found, key=lambda r: r["feature"])


def format_table(found: list[dict]) -> str:
    """A fixed-width text table of drift rows."""
    widths = {c: max([len(c)] + [len(_shown(r[c])) for r in found]) for c in COLUMNS}
    lines = ["  ".join(c.ljust(widths[c]) for c in COLUMNS)]
    lines.append("  ".join("-" * widths[c] for c in COLUMNS))
    for row in found:
        lines.append("  ".join(_shown(row[c]).ljust(widths[c]) for c in COLUMNS))
    return "\n".join(lines)


def _shown(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def described(row: dict) -> str:
    """One row in words: 'span 02 width drift (Jensen-Shannon against span 01) 1 > 0.3'."""
    return (
        f"span {row['span']} {row['feature']} {row['kind']} ({row['measure']} against "
        f"{row['against']}) {row['value']:.4g} > {row['threshold']:.4g}"
    )


class DriftDetected(ValidationFailed):
    """New data moved past the schema's thresholds; `drift` holds every measured row."""

    hint = "drift"

    def __init__(self, drift: list[dict]):
        past = [row for row in drift if row["drifted"]]
        listed = "; ".join(described(r) for r in past[:5])
        more = f"; and {len(past) - 5} more" if len(past) > 5 else ""
        super().__init__(
            [],
            drift,
            f"{len(past)} distances past their thresholds: {listed}{more}\n{format_table(past)}",
        )
