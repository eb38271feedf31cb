"""Shared helpers of the full-site tests."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest


@pytest.fixture
def controller_secret(host) -> Callable[[str, str], str]:
    """Read a credential the run generated on the controller (<inventory>/secrets/<hub>/)."""
    inventory = host.backend.ansible_inventory  # molecule passes the inventory folder
    base = inventory if os.path.isdir(inventory) else os.path.dirname(inventory)

    def read(hub: str, name: str) -> str:
        with open(os.path.join(base, "secrets", hub, name)) as handle:
            return handle.read().split()[0]

    return read
