"""Shared by every scenario's tests: testinfra reaches each test host through one kept-open
channel instead of a ``docker exec`` per command (see testbed/testinfra_channel.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "testbed"))

import testinfra_channel  # noqa: E402

testinfra_channel.install()
