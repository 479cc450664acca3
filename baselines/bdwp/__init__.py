"""BDWP: N:M bidirectional weight pruning for sparse training, in torch.

The torch reference of the training algorithm whose GEMMs archsim schedules and simulates
(see ``docs/bdwp_training.md``): FF uses ``W ⊙ M_ff`` (N:M along ``in``), BP uses ``W ⊙ M_bp``
(N:M along ``out``), WG is dense and straight-through with SR-STE decay.
"""

from __future__ import annotations

from .functions import (
    BP_MASK_SOURCES,
    DEFAULT_DECAY,
    BDWPConv2dFunction,
    BDWPLinearFunction,
    bdwp_masks,
    check_nm,
    nm_mask,
)
from .modules import MODES, BDWPConv2d, BDWPLinear

__all__ = [
    "BP_MASK_SOURCES",
    "DEFAULT_DECAY",
    "MODES",
    "BDWPConv2d",
    "BDWPConv2dFunction",
    "BDWPLinear",
    "BDWPLinearFunction",
    "bdwp_masks",
    "check_nm",
    "nm_mask",
]
