"""Markdown tables of the results, and the generated block of docs/benchmarks.md.

The generated block sits between :data:`BEGIN` and :data:`END`; everything outside them is
hand-written and kept as it is.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from benchmarks.data import MIB
from benchmarks.measure import Result, Table

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"
MARKERS = {
    "loopback": (BEGIN, END),
    "field": ("<!-- bench-field:begin -->", "<!-- bench-field:end -->"),
}
"""Each profile's generated block (a file may hold both)."""
FAILED = "failed"
"""The figure of a contender that failed in every round (it crashed or read wrong bytes)."""


def markdown(header: list[str], rows: list[list[str]]) -> str:
    """Return a Markdown table with aligned columns."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    return "\n".join(lines)


def _figure(value: float, unit: str) -> str:
    if unit.endswith("bytes"):
        return f"{value:,.0f}"
    if unit == "ms":
        return f"{value:.1f}" if value < 100 else f"{value:.0f}"
    return f"{value:.0f}"


def _row(table: Table, result: Result) -> list[str]:
    name = result.contender
    if result.failures:
        name += f" ({len(result.failures)} round(s) failed: {result.failures[0][:50]})"
    if not result.values:
        columns = 5 + len(table.extra_columns)
        return [name.replace("|", "/"), FAILED, *["-"] * columns]
    values = sorted(result.values)
    spread = "-"
    if len(values) > 1:
        spread = f"{_figure(values[0], table.unit)}-{_figure(values[-1], table.unit)}"
    reference = table.results.get(table.reference or "")
    ratio = "-"
    if reference is not None and result is not reference and reference.values:
        ratio = f"{result.median / reference.median:.2f}"
    cpu = f"{statistics.median(result.cpu_per_gib):.2f}" if result.cpu_per_gib else "-"
    rss = f"{max(result.peak_rss) / MIB:.0f}" if result.peak_rss else "-"
    extra = [result.notes.get(c, "-") for c in table.extra_columns]
    figure = _figure(result.median, table.unit)
    return [name.replace("|", "/"), figure, spread, ratio, cpu, rss, *extra]


def render(table: Table) -> str:
    """Return the table's title line and its Markdown table (columns that are "-" in every
    row are left out)."""
    header = ["contender", f"{table.unit} (median)", "min-max", f"vs {table.reference}"]
    header += ["daemon CPU-s/GiB", "daemon peak RSS MiB", *table.extra_columns]
    rows = [_row(table, r) for r in table.results.values()]
    keep = [i for i in range(len(header)) if i < 2 or any(row[i] != "-" for row in rows)]
    rows = [[row[i] for i in keep] for row in rows]
    return f"**{table.title}** (`{table.job}`)\n\n{markdown([header[i] for i in keep], rows)}"


def write_block(path: Path, block: str, begin: str = BEGIN, end: str = END) -> None:
    """Replace the generated block of *path* between *begin* and *end* with *block* (append
    it if there is none)."""
    text = path.read_text() if path.exists() else ""
    generated = f"{begin}\n{block.strip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + generated + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + ("\n\n" if text else "") + generated + "\n"
    path.write_text(text)
