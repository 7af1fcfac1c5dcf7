"""The front end's malloc setting: large buffers go back to the system when freed."""

from __future__ import annotations

import platform
import sys

import pytest

from tsf.memory import release_large_buffers


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="mallopt is glibc's")
def test_mmap_threshold_is_fixed_on_glibc():
    assert release_large_buffers() is True


def test_other_platforms_are_left_alone(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert release_large_buffers() is False
