"""``status``: what is live, what is frozen, and what a re-run would do (read-only)."""

from __future__ import annotations

import os
from typing import Any

from .config import Config
from .engine import describe_open
from .journal import Journal, lock_is_held
from .steps import read_fact


def status(config: Config) -> dict[str, Any]:
    state = config.journal_dir
    fact = read_fact(config.fact_file)
    live = fact.get("active_colour", "")
    colours = {}
    for name, colour in config.colours.items():
        entry = fact.get("colours", {}).get(name, {})
        role = ("live" if name == live else
                "frozen rollback point" if name == fact.get("frozen") else "idle")
        colours[name] = {
            "role": role,
            "release_id": entry.get("release_id"),
            "maintenance": os.path.exists(os.path.join(colour.dataroot, "climaintenance.html")),
            "switched_in": fact.get("switched_in", {}).get(name),
        }
    open_op = describe_open(state) if state.exists() else None
    if open_op is not None:
        # The half-done colour is not a rollback point: say what it is.
        for name in colours:
            if name == open_op.get("to"):
                colours[name]["role"] = f"target of an interrupted {open_op['op']}"
    last = Journal(state).last_archived() if (state / "history").exists() else None
    running = lock_is_held(state) if state.exists() else False
    return {
        "live": live,
        "frozen": fact.get("frozen"),
        "colours": colours,
        "running": running,
        "interrupted": open_op is not None and not running,
        "open_operation": open_op,
        "rerun_will": (None if open_op is None else
                       f"{open_op['next']} the {open_op['op']} "
                       f"({', '.join(open_op['will_run']) or 'close the journal'}); "
                       f"colour {open_op['site_after']} serves afterwards"),
        "last_operation": None if last is None else {
            "op": last.op, "outcome": last.outcome, "started_at": last.started_at,
            "maintenance_seconds": last.result.get("maintenance_seconds"),
        },
        "last_switch": fact.get("last_switch"),
        "last_upgrade": fact.get("last_upgrade"),
        "last_rollback": fact.get("last_rollback"),
    }
