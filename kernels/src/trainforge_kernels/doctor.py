"""What `trainforge doctor` shows about kernels (registered in the ``trainforge.doctor``
entry-point group, so trainforge-core never imports this package itself)."""

from __future__ import annotations


def doctor_rows() -> list[tuple[str, str, str]]:
    """(name, value, note) rows: the Triton version and each op's backend for a CUDA tensor."""
    from trainforge_kernels._dispatch import backend, triton_version

    rows = [("triton", triton_version() or "no", "installed" if triton_version() else "")]
    for op, (chosen, why) in backend().items():
        rows.append((f"  {op}", chosen, why))
    return rows
