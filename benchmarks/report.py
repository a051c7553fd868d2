"""Reports: the fields every command's report shares, a console table, JSON with every raw
figure and the machine, a markdown table, and a PNG of the scaling curves."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dbsi.benchmarks import machine as machine_info_module
from dbsi.runtime.atomic import atomic_path, atomic_write_text

# A column: header, key in the row dict, format spec (applied to numbers only).
Column = tuple[str, str, str]


def base_report(command: str, machine: dict[str, Any], model_set: Any, **extra: Any) -> dict:
    """What every command's report holds: the machine, what was benchmarked (backends, what
    could not be opened and why, random weights or not) and the notes; ``extra`` adds the
    command's own fields (``rows`` among them)."""
    notes = []
    if model_set.random_weights:
        notes.append(
            "Weights are RANDOM (seed 0, full width): speed figures are real, quality is not."
        )
    notes.extend(f"not run: {s['name']}: {s['reason']}" for s in model_set.skipped)
    return {
        "command": command,
        "machine": machine,
        "machine_summary": machine_info_module.describe(machine),
        "random_weights": model_set.random_weights,
        "checkpoint": model_set.checkpoint,
        "backends": [
            {
                "name": c.name,
                "device": c.device,
                "precision": c.precision,
                "source": c.source,
                "reference": c.is_reference,
            }
            for c in model_set.candidates
        ],
        "skipped": model_set.skipped,
        "notes": notes,
        **extra,
    }


def format_cell(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        if math.isnan(value):
            return "nan"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, spec)
    return str(value)


def table_cells(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> list[list[str]]:
    return [[format_cell(row.get(key), spec) for _, key, spec in columns] for row in rows]


def console_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """Fixed-width text table, numbers right-aligned."""
    headers = [h for h, _, _ in columns]
    cells = table_cells(rows, columns)
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    numeric = [bool(spec) for _, _, spec in columns]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)
        ).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out.extend(line(r) for r in cells)
    return "\n".join(out)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    headers = [h for h, _, _ in columns]
    align = ["---:" if spec else "---" for _, _, spec in columns]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines.extend("| " + " | ".join(r) + " |" for r in table_cells(rows, columns))
    return "\n".join(lines)


def json_safe(value: Any) -> Any:
    """Infinities and NaN as the strings "inf", "-inf", "nan" (strict JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_reports(
    report: dict[str, Any], columns: Sequence[Column], out_dir: Path, stem: str
) -> dict[str, Path]:
    """Write ``stem``.json (the whole report) and ``stem``.md (notes and the table) into
    ``out_dir``; returns the paths by kind."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{stem}.json", "markdown": out_dir / f"{stem}.md"}
    atomic_write_text(
        paths["json"], json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n"
    )
    notes = "".join(f"- {note}\n" for note in report.get("notes", []))
    machine = report.get("machine_summary", "")
    text = f"# bokeh-bench {report['command']}\n\n"
    text += f"Machine: {machine}\n\n" if machine else ""
    text += notes + ("\n" if notes else "")
    text += markdown_table(report["rows"], columns) + "\n"
    atomic_write_text(paths["markdown"], text)
    return paths


def plot_scaling(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Two panels: latency against megapixels (batch 1) and images/s against batch size, one
    curve per backend. Rows need backend, megapixels, batch, median_s and images_per_s."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    backends = sorted({r["backend"] for r in rows})
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for backend in backends:
        mine = [r for r in rows if r["backend"] == backend]
        by_size = sorted(
            (r for r in mine if r["sweep"] == "resolution"), key=lambda r: r["megapixels"]
        )
        if by_size:
            left.plot(
                [r["megapixels"] for r in by_size],
                [r["median_s"] for r in by_size],
                marker="o",
                label=backend,
            )
        by_batch = sorted((r for r in mine if r["sweep"] == "batch"), key=lambda r: r["batch"])
        if by_batch:
            right.plot(
                [r["batch"] for r in by_batch],
                [r["images_per_s"] for r in by_batch],
                marker="o",
                label=backend,
            )
    left.set_xlabel("megapixels per image")
    left.set_ylabel("median latency, batch 1 (s)")
    left.set_title("Time against resolution")
    right.set_xlabel("batch size")
    right.set_ylabel("images / s")
    right.set_title("Throughput against batch size")
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path
