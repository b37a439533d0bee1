"""Readable rendering of a `strip_checkpoint` report.

Example:
    >>> print(format_report(report))
"""

from __future__ import annotations

from tfprune.sparsity import format_sparsity_table


def _bytes(n: int) -> str:
    return f"{n:,} B" if n < 10_000 else f"{n / 1024:,.1f} KiB" if n < 10_000_000 else f"{n / 2**20:,.2f} MiB"


def format_report(report: dict) -> str:
    """The report as text: chosen checkpoint, per-weight sparsity table, sizes, verification.

    Example:
        >>> report = tfprune.strip_checkpoint("ckpts", output_dir="export", filename="model.tflite")
        >>> print(tfprune.format_report(report))
    """
    ck, out = report["checkpoint"], report["output"]
    lines = [f"checkpoint: {ck['path']} ({ck['kind']}; {ck['reason']})"]
    if report.get("output_node_names"):
        lines.append(f"outputs kept: {', '.join(report['output_node_names'])}")
    for warning in report.get("warnings", []):
        lines.append(f"warning: {warning}")
    lines.append("")
    lines.append(format_sparsity_table(report["weights"]))
    lines.append("")
    lines.append(f"{'size':<30} {'raw':>14} {'zip':>14} {'gzip':>14}")
    lines.append(f"{'checkpoint':<30} {_bytes(ck['bytes']):>14} {'':>14} {'':>14}")
    lines.append(f"{'stripped ' + out['format']:<30} {_bytes(out['raw_bytes']):>14} {_bytes(out['zip_bytes']):>14} "
                 f"{_bytes(out['gzip_bytes']):>14}")
    if "baseline" in report:
        base = report["baseline"]
        lines.append(f"{'baseline':<30} {_bytes(base['raw_bytes']):>14} {_bytes(base['zip_bytes']):>14} "
                     f"{_bytes(base['gzip_bytes']):>14}")
    lines.append("")
    lines.append(f"compression ratio (raw / zip): {report['compression_ratio']:.2f}x; "
                 f"checkpoint / stripped zip: {report['checkpoint_to_zip_ratio']:.2f}x")
    if "baseline" in report:
        lines.append(f"zipped: {report['baseline']['times_smaller']:.2f}x smaller than the zipped baseline")
    verification = report.get("verification")
    if verification:
        status = "ok" if verification["ok"] else "MISMATCH"
        lines.append(f"predictions vs pruned model ({verification['inputs']}): max |diff| "
                     f"{verification['max_abs_diff']:.3g} (tolerance {verification['tolerance']:.3g}) {status}")
    lines.append(f"wrote {out['path']}")
    return "\n".join(lines)
