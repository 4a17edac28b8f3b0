"""The error a validation that says no raises, with the rows that say why."""

from __future__ import annotations


def format_table(rows: list[dict]) -> str:
    """A fixed-width text table of anomaly rows (split, feature, problem, detail)."""
    columns = ("split", "feature", "problem", "detail")
    widths = {c: max([len(c)] + [len(str(r[c])) for r in rows]) for c in columns}
    widths["detail"] = min(widths["detail"], 100)
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines.append("  ".join("-" * widths[c] for c in columns))
    for row in rows:
        lines.append("  ".join(str(row[c])[: widths[c]].ljust(widths[c]) for c in columns))
    return "\n".join(lines)


class ValidationFailed(RuntimeError):
    """Raised when the data has anomalies; `anomalies` holds the table rows and `drift` every
    measured drift and skew distance (components/validate/drift.py)."""

    hint = "validate"

    def __init__(self, anomalies: list[dict], drift: list[dict] = (), message: str = ""):
        self.anomalies = anomalies
        self.drift = list(drift)
        super().__init__(message or f"{len(anomalies)} data anomalies:\n{format_table(anomalies)}")
