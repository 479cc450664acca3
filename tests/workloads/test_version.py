"""The version comes from the package metadata, and every reader sees the same string."""

from __future__ import annotations

import importlib.metadata

import archsim
from workloads.version import ARCHSIM_VERSION


def test_version_is_the_installed_metadata():
    assert ARCHSIM_VERSION == importlib.metadata.version("archsim")
    assert archsim.__version__ == ARCHSIM_VERSION
