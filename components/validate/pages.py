"""The statistics and drift pages, drawn from TFDV's statistics with nothing from the web.

TFDV's own page (Facets) loads its scripts from the internet: on a cluster without internet
access it opens as an empty frame. These pages are one self-contained HTML file each: inline
style, inline SVG charts, no script. Per feature, every set of statistics side by side (a
span's training and validation images, or a span and the span before it): the histogram (or
the most frequent values), count, missing, mean, standard deviation, minimum and maximum. The
anomalies, the drift and skew distances and the copies of training images found in validation
come first.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from tensorflow_metadata.proto.v0 import statistics_pb2

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")
WIDTH, HEIGHT, TOP_VALUES = 420, 120, 12


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _features(stats: statistics_pb2.DatasetFeatureStatisticsList) -> dict[str, object]:
    found = {}
    for feature in stats.datasets[0].features if stats.datasets else []:
        name = ".".join(feature.path.step) or feature.name
        found[name] = feature
    return found


def _numeric_chart(names: Sequence[str], features: Sequence) -> str:
    """Each set's equal-width histogram as bars of its share, on one value axis."""
    series = []
    for feature in features:
        buckets = []
        if feature is not None and feature.HasField("num_stats"):
            for histogram in feature.num_stats.histograms:
                if histogram.type == statistics_pb2.Histogram.STANDARD:
                    buckets = [
                        (b.low_value, b.high_value, b.sample_count) for b in histogram.buckets
                    ]
        series.append(buckets)
    values = [v for buckets in series for low, high, _ in buckets for v in (low, high)]
    if not values:
        return "<p class=note>no histogram</p>"
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    pad = span * 0.02
    low, high = low - pad, high + pad
    span = high - low
    parts = [f'<svg width="{WIDTH}" height="{HEIGHT + 20}" role="img">']
    parts.append(f'<line x1="0" y1="{HEIGHT}" x2="{WIDTH}" y2="{HEIGHT}" stroke="#999"/>')
    for index, buckets in enumerate(series):
        total = sum(c for _, _, c in buckets) or 1.0
        peak = max((c / total for _, _, c in buckets), default=0) or 1.0
        for b_low, b_high, count in buckets:
            share = count / total
            x = (b_low - low) / span * WIDTH
            width = max((b_high - b_low) / span * WIDTH, 2.0)
            height = share / peak * (HEIGHT - 4)
            parts.append(
                f'<rect x="{x:.1f}" y="{HEIGHT - height:.1f}" width="{width:.1f}" '
                f'height="{height:.1f}" fill="{COLORS[index % len(COLORS)]}" '
                f'fill-opacity="0.55"><title>{_e(names[index])}: {b_low:.4g} to {b_high:.4g}: '
                f"{share:.1%}</title></rect>"
            )
    parts.append(f'<text x="0" y="{HEIGHT + 15}" font-size="11">{low + pad:.4g}</text>')
    parts.append(
        f'<text x="{WIDTH}" y="{HEIGHT + 15}" font-size="11" text-anchor="end">'
        f"{high - pad:.4g}</text></svg>"
    )
    return "".join(parts)


def _categorical_chart(names: Sequence[str], features: Sequence) -> str:
    """The most frequent values of the first set, each set's share of them as bars."""
    shares = []
    for feature in features:
        counts = {}
        if feature is not None and feature.HasField("string_stats"):
            for value in feature.string_stats.rank_histogram.buckets or ():
                counts[value.label] = value.sample_count
            if not counts:
                for value in feature.string_stats.top_values:
                    counts[value.value] = value.frequency
        total = sum(counts.values()) or 1.0
        shares.append({k: v / total for k, v in counts.items()})
    order = sorted(shares[0], key=lambda k: -shares[0][k])[:TOP_VALUES] if shares else []
    if not order:
        return "<p class=note>no values</p>"
    row = 16
    parts = [f'<svg width="{WIDTH}" height="{row * len(order) * len(shares) + 4}" role="img">']
    peak = max(s.get(k, 0) for s in shares for k in order) or 1.0
    y = 0
    for value in order:
        for index, share in enumerate(shares):
            width = share.get(value, 0) / peak * (WIDTH - 170)
            parts.append(
                f'<text x="0" y="{y + 12}" font-size="11">{_e(value)[:24]}</text>'
                f'<rect x="160" y="{y + 2}" width="{width:.1f}" height="12" '
                f'fill="{COLORS[index % len(COLORS)]}"><title>{_e(names[index])}: '
                f"{share.get(value, 0):.1%}</title></rect>"
                f'<text x="{165 + width:.1f}" y="{y + 12}" font-size="10">'
                f"{share.get(value, 0):.1%}</text>"
            )
            y += row
    parts.append("</svg>")
    return "".join(parts)


def _summary_rows(names: Sequence[str], features: Sequence) -> str:
    rows = []
    for index, feature in enumerate(features):
        cells = ["", "", "", "", "", ""]
        if feature is not None:
            stats = feature.num_stats if feature.HasField("num_stats") else None
            common = (
                stats.common_stats
                if stats is not None
                else (feature.string_stats.common_stats if feature.HasField("string_stats") else
                      feature.bytes_stats.common_stats if feature.HasField("bytes_stats") else None)
            )  # fmt: skip
            if common is not None:
                cells[0] = f"{common.num_non_missing:,}"
                cells[1] = f"{common.num_missing:,}"
            if stats is not None:
                cells[2:] = [f"{stats.mean:.4g}", f"{stats.std_dev:.4g}", f"{stats.min:.4g}",
                             f"{stats.max:.4g}"]  # fmt: skip
        color = COLORS[index % len(COLORS)]
        rows.append(
            f'<tr><td><span class=key style="background:{color}"></span>{_e(names[index])}</td>'
            + "".join(f"<td>{c}</td>" for c in cells)
            + "</tr>"
        )
    return "".join(rows)


def _table(rows: list[dict], columns: Sequence[str]) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_e(row.get(c, ''))}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


STYLE = """
body { font: 14px system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
table { border-collapse: collapse; margin: 8px 0; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; font-size: 12px; }
.feature { border-top: 1px solid #ccc; padding: 10px 0; display: flex; gap: 24px; }
.key { display: inline-block; width: 10px; height: 10px; margin-right: 6px; }
.bad { color: #b00; } .note { color: #666; }
"""


def statistics_page(
    title: str,
    statistics: dict[str, statistics_pb2.DatasetFeatureStatisticsList],
    anomalies: list[dict] | None = None,
    drift: list[dict] | None = None,
    duplicates: dict | None = None,
) -> str:
    """One self-contained HTML page: the findings first, then every feature of every set of
    statistics side by side."""
    names = list(statistics)
    per_set = [_features(statistics[n]) for n in names]
    features = sorted({f for found in per_set for f in found})
    parts = [f"<!doctype html><html><head><meta charset=utf-8><title>{_e(title)}</title>"]
    parts.append(f"<style>{STYLE}</style></head><body><h1>{_e(title)}</h1>")
    parts.append(
        "<p>"
        + " ".join(
            f'<span class=key style="background:{COLORS[i % len(COLORS)]}"></span>{_e(n)} '
            f"({int(statistics[n].datasets[0].num_examples) if statistics[n].datasets else 0:,} "
            "examples)&nbsp;&nbsp;"
            for i, n in enumerate(names)
        )
        + "</p>"
    )
    if anomalies:
        parts.append(f"<h2 class=bad>{len(anomalies)} anomalies</h2>")
        parts.append(_table(anomalies, ("split", "feature", "problem", "detail")))
    else:
        parts.append("<h2>No anomalies against the reviewed schema</h2>")
    if duplicates:
        pairs = duplicates.get("pairs", {})
        parts.append(
            f"<h2>Copies</h2><p>{duplicates.get('leaked_validation', 0):,} validation images "
            f"copy training images ({pairs.get('validation-train', 0):,} pairs); "
            f"{pairs.get('train', 0):,} pairs within train, {pairs.get('validation', 0):,} within "
            f"validation (exact, or within {duplicates.get('near_bits')} bits of 64); every pair "
            f"in {_e(duplicates.get('file'))}</p>"
        )
    if drift:
        parts.append("<h2>Drift and skew</h2>")
        shown = [{**r, "past threshold": "yes" if r.get("drifted") else ""} for r in drift]
        parts.append(_table(shown, ("span", "kind", "against", "feature", "measure", "value",
                                    "threshold", "past threshold")))  # fmt: skip
    parts.append("<h2>Features</h2>")
    for name in features:
        found = [s.get(name) for s in per_set]
        numeric = any(f is not None and f.HasField("num_stats") for f in found)
        textual = any(f is not None and f.HasField("string_stats") for f in found)
        chart = (
            _categorical_chart(names, found)
            if textual
            else (_numeric_chart(names, found) if numeric else "<p class=note>bytes</p>")
        )
        parts.append(
            f"<div class=feature><div><b>{_e(name)}</b><table><tr><th></th><th>count</th>"
            "<th>missing</th><th>mean</th><th>std</th><th>min</th><th>max</th></tr>"
            f"{_summary_rows(names, found)}</table></div><div>{chart}</div></div>"
        )
    parts.append("</body></html>")
    return "".join(parts)
