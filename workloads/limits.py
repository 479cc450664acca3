"""The size limits a workload is checked against before anything is allocated or built.

Its own module, below ``workloads.spec`` and ``workloads.matrices``, because both check against
it (the spec while validating, the matrix reader before reading a file's body).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Limits", "MAX_INT"]

#: Largest integer any size field takes: far above every real size, and below the 2**63 where
#: numpy's int64 arithmetic downstream would overflow silently.
MAX_INT = 1 << 48

PositiveInt = Annotated[int, Field(gt=0, le=MAX_INT)]


class Limits(BaseModel):
    """Sizes checked before anything is allocated or built (docs/workloads.md, "Limits").

    The defaults keep a run within about a gigabyte and a few minutes; a workload that means to
    be larger raises them here (``limits: {tile_steps: 5000000}``).

    Attributes
    ----------
    tile_steps
        GEMM tile steps (one COMPUTE and its loads) of all distinct GEMM programs, counted from
        the tiling before the programs are built; each costs about 1 KiB and 100 µs.
    matrix_rows, matrix_nnz
        Rows (and columns) and nonzeros of one SpGEMM matrix, checked against a generator's
        parameters and a Matrix Market header before the matrix is built or read.
    array_elements
        Elements of one ``.npy``/``.npz`` array (Q, K, block masks), checked on its header.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    tile_steps: PositiveInt = 500_000
    matrix_rows: PositiveInt = 20_000_000
    matrix_nnz: PositiveInt = 20_000_000
    array_elements: PositiveInt = 1 << 28
