"""Host account look-ups, injectable so that plans do not depend on the machine."""

from __future__ import annotations

import grp
import pwd
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


class AccountLookup(Protocol):
    """What the planner needs to know about the hub host's accounts."""

    def user_ids(self, username: str) -> tuple[int, int] | None:
        """(uid, primary gid) of a host account, or None if there is none."""

    def group_name(self, gid: int) -> str | None:
        """Name of the host group with this gid, or None."""

    def group_id(self, name: str) -> int | None:
        """Gid of the host group with this name, or None."""


class SystemAccounts:
    """The hub host's own passwd and group databases."""

    def user_ids(self, username: str) -> tuple[int, int] | None:
        try:
            entry = pwd.getpwnam(username)
        except KeyError:
            return None
        return entry.pw_uid, entry.pw_gid

    def group_name(self, gid: int) -> str | None:
        try:
            return grp.getgrgid(gid).gr_name
        except KeyError:
            return None

    def group_id(self, name: str) -> int | None:
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            return None


@dataclass(frozen=True)
class StaticAccounts:
    """Fixed tables: for tests, and for hubs that must ignore the host's accounts."""

    users: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    groups: Mapping[str, int] = field(default_factory=dict)

    def user_ids(self, username: str) -> tuple[int, int] | None:
        return self.users.get(username)

    def group_name(self, gid: int) -> str | None:
        for name, group_gid in self.groups.items():
            if group_gid == gid:
                return name
        return None

    def group_id(self, name: str) -> int | None:
        return self.groups.get(name)
