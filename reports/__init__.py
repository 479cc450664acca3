"""Design-space exploration and reports: sweeps into a SQLite store, an FPGA area model,
plots and a self-contained HTML report (docs/dse.md, docs/reports.md).

Submodules are imported where they are needed; importing ``reports`` itself costs nothing.
"""

from __future__ import annotations
