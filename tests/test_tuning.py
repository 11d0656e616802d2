"""glibc malloc tuning of ``schoolsuite serve`` (schoolsuite/tuning.py)."""

from __future__ import annotations

import ctypes
import platform

import pytest

from schoolsuite import tuning


def test_an_operator_setting_is_kept():
    for name in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES"):
        assert tuning.tune_malloc({name: "1"}) == "left as the environment sets it"


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's thresholds are glibc's")
def test_glibc_takes_the_thresholds():
    assert tuning.tune_malloc({}) == "mmap threshold 4 MiB, trim threshold 64 MiB"


def test_a_c_library_without_mallopt_is_left_alone(monkeypatch):
    class NoMallopt:
        def __init__(self, name):
            pass

    monkeypatch.setattr(ctypes, "CDLL", NoMallopt)
    assert tuning.tune_malloc({}) == "not tuned (no mallopt)"
