"""The state machine: run an operation's steps with the journal, resume or undo one.

Rules (README, "Upgrading Moodle"):
- every step is journaled before (``step_start``) and after (``step_done`` with its data and
  duration); a crash anywhere leaves a journal that says how far it got;
- a failure before the switch undoes every started step in reverse order (the live colour
  is unfrozen, the idle copy dropped) and closes the journal (outcome ``undone``);
- on start, an open journal is finished when its point of no return is done (upgrade.php
  succeeded, or for a rollback the switch), otherwise undone; an undo interrupted half-way
  is carried on;
- after the switch nothing is undone: a failing record or cron step leaves the journal open
  and a re-run finishes it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Config
from .host import Http, Runner
from .journal import Journal, Replay, ensure_state_dir, locked, replay
from .steps import (
    OPERATIONS,
    Ctx,
    Operation,
    count_writes,
    read_fact,
    to_stderr,
    window_end,
)

Boundary = Callable[[str], None]


class Refused(Exception):
    """The operation was refused before anything changed."""


class OperationFailed(Exception):
    """The operation stopped; the message says in what state the site is."""


@dataclass
class Engine:
    config: Config
    runner: Runner
    http: Http
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time
    # Called at every step boundary with a label such as "start:freeze" (tests kill here).
    boundary: Boundary = lambda label: None
    # Lines for the operator (fallbacks of the database copy): stderr by default.
    log: Callable[[str], None] = to_stderr

    @property
    def state_dir(self) -> Path:
        return self.config.journal_dir

    def journal(self) -> Journal:
        return Journal(self.state_dir, clock=self.clock)

    # -------------------------------------------------------------- public entry points

    def upgrade(self) -> dict[str, Any]:
        with locked(self.state_dir):
            recovered = self._recover()
            if recovered is not None and recovered.get("op") == "upgrade" and \
                    recovered.get("outcome") == "done":
                return {**recovered, "recovered": True}
            plan = self._plan_upgrade()
            if plan is None:
                return {"op": "upgrade", "changed": False,
                        "message": "the live colour already runs the target release",
                        **({"recovered_first": recovered} if recovered else {})}
            result = self._start(OPERATIONS["upgrade"], plan)
            return {**result, **({"recovered_first": recovered} if recovered else {})}

    def rollback(self) -> dict[str, Any]:
        with locked(self.state_dir):
            recovered = self._recover()
            if recovered is not None and recovered.get("op") == "rollback" and \
                    recovered.get("outcome") == "done":
                return {**recovered, "recovered": True}
            plan = self._plan_rollback()
            if plan is None:
                return {"op": "rollback", "changed": False,
                        "message": "the last switch was already a rollback: nothing to do"}
            result = self._start(OPERATIONS["rollback"], plan)
            return {**result, **({"recovered_first": recovered} if recovered else {})}

    def switch(self, to: str, reason: str) -> dict[str, Any]:
        """Make a colour prepared outside the program live (a restore into the idle one)."""
        with locked(self.state_dir):
            recovered = self._recover()
            fact = self._fact()
            live = str(fact["active_colour"])
            if to not in self.config.colours or to not in fact.get("colours", {}):
                raise Refused(f"colour {to!r} is not deployed on this host. Nothing was changed.")
            if to == live:
                return {"op": "switch", "changed": False,
                        "message": f"colour {to} is already live: nothing to do"}
            plan = {"live": live, "idle": to, "fact": fact, "reason": reason}
            result = self._start(OPERATIONS["switch"], plan)
            return {**result, **({"recovered_first": recovered} if recovered else {})}

    def resume(self) -> dict[str, Any]:
        with locked(self.state_dir):
            recovered = self._recover()
            return recovered or {"changed": False, "message": "no interrupted operation"}

    # ----------------------------------------------------------------------- planning

    def _fact(self) -> dict[str, Any]:
        fact = read_fact(self.config.fact_file)
        live = fact.get("active_colour")
        if live not in self.config.colours or live not in fact.get("colours", {}):
            raise Refused(f"{self.config.fact_file} names no deployed live colour: "
                          "run playbooks/site.yml first")
        return fact

    def _plan_upgrade(self) -> dict[str, Any] | None:
        c = self.config
        if c.target is None:
            raise Refused("the configuration names no target release")
        fact = self._fact()
        live = str(fact["active_colour"])
        idle = c.other(live)
        if c.target.expect_live and c.target.expect_live != live:
            raise Refused(f"colour {live} is live, not {c.target.expect_live} as prepared: "
                          "re-run the playbook. Nothing was changed.")
        if fact["colours"][live].get("release_id") == c.target.release_id:
            return None
        plan: dict[str, Any] = {
            "live": live, "idle": idle, "fact": fact,
            "target": {k: getattr(c.target, k) for k in (
                "release", "release_id", "release_dir", "code_version", "public_layout",
                "code_release")},
        }
        writes = self._left_behind(plan)
        if writes:
            plan["keep_writes"] = {"stamp": time.strftime("%Y%m%dT%H%M%SZ",
                                                          time.gmtime(self.clock())), **writes}
        return plan

    def _left_behind(self, plan: dict[str, Any]) -> dict[str, Any]:
        """Rows and files that a rollback left behind on the idle colour (written there
        after the switch); refused unless discard_writes. Empty when there are none."""
        fact, idle = plan["fact"], str(plan["idle"])
        last = fact.get("last_switch", {})
        rb = fact.get("last_rollback", {})
        if last.get("reason") != "rollback" or rb.get("left_on") != idle:
            return {}
        since = int(rb.get("since_epoch") or 0)
        writes = count_writes(self._ctx(plan, Replay()), idle, since) if since else {}
        if not (writes.get("rows") or writes.get("files")):
            return {}
        if not self.config.discard_writes:
            raise Refused(
                f"colour {idle} holds {writes['rows']} rows and {writes['files']} files "
                f"written after the switch of {since} that the rollback left behind; the "
                "upgrade would overwrite them. Set discard_writes "
                "(moodle_bluegreen_discard_writes) to keep a dump of them and go on. "
                "Nothing was changed.")
        return writes

    def check_upgrade(self) -> dict[str, Any]:
        """Read-only, before anything is prepared: would an upgrade be refused for writes a
        rollback left behind? Raises Refused like the upgrade would."""
        with locked(self.state_dir):
            if self.journal().is_open():
                return {"changed": False, "message": "an interrupted operation comes first"}
            fact = self._fact()
            live = str(fact["active_colour"])
            plan = {"live": live, "idle": self.config.other(live), "fact": fact}
            return {"changed": False, "left_behind": self._left_behind(plan)}

    def _plan_rollback(self) -> dict[str, Any] | None:
        fact = self._fact()
        live = str(fact["active_colour"])
        last = fact.get("last_switch", {})
        if last.get("reason") == "rollback" and last.get("to") == live:
            return None
        back = fact.get("frozen", "")
        if back not in fact.get("colours", {}) or back == live or not last:
            raise Refused(f"there is no rollback point (live colour {live}). "
                          "Nothing was changed.")
        return {"live": live, "idle": back, "fact": fact, "since": int(last.get("epoch", 0))}

    # -------------------------------------------------------------------- the machine

    def _ctx(self, plan: dict[str, Any], r: Replay) -> Ctx:
        return Ctx(
            config=self.config, runner=self.runner, http=self.http, plan=plan,
            data={n: s.data for n, s in r.steps.items()},
            attempts={n: s.started for n, s in r.steps.items()},
            sleep=self.sleep, clock=self.clock, log=self.log,
        )

    def _start(self, op: Operation, plan: dict[str, Any]) -> dict[str, Any]:
        ensure_state_dir(self.state_dir)
        j = self.journal()
        j.write("begin", op=op.name, id=uuid.uuid4().hex, plan=plan)
        return self._forward(op, j)

    def _forward(self, op: Operation, j: Journal) -> dict[str, Any]:
        committed = op.index(op.committed_after)
        for index, step in enumerate(op.steps):
            r = replay(j.read())
            if r.steps.get(step.name) and r.steps[step.name].done:
                continue
            self.boundary(f"before:{step.name}")
            j.write("step_start", step=step.name)
            self.boundary(f"start:{step.name}")
            r = replay(j.read())
            ctx = self._ctx(r.plan, r)
            began = self.clock()
            try:
                data = step.run(ctx)
            except Exception as error:
                message = str(error) or type(error).__name__
                j.write("step_failed", step=step.name, error=message[:2000])
                if index <= committed and not _done(j, op.committed_after):
                    self._undo(op, j, reason=message)
                    raise OperationFailed(
                        f"The {op.name} stopped at step '{step.name}': {message}. "
                        f"Everything was undone: colour {r.plan['live']} serves, as before."
                    ) from error
                raise OperationFailed(
                    f"The {op.name} stopped at step '{step.name}' after the switch: {message}. "
                    f"Colour {r.plan['idle']} is live; re-run to finish."
                ) from error
            self.boundary(f"ran:{step.name}")
            j.write("step_done", step=step.name, seconds=round(self.clock() - began, 3),
                    data=data)
            self.boundary(f"after:{step.name}")
        result = self._result(op, replay(j.read()), "done")
        j.write("end", outcome="done", result=result)
        j.archive()
        return result

    def _undo(self, op: Operation, j: Journal, reason: str = "") -> dict[str, Any]:
        r = replay(j.read())
        if not r.undoing:
            j.write("undo_begin", reason=reason[:2000])
        for step in reversed(op.steps):
            r = replay(j.read())
            state = r.steps.get(step.name)
            if state is None or state.started == 0 or state.undone:
                continue
            if step.undo is not None:
                self.boundary(f"undo:{step.name}")
                j.write("undo_start", step=step.name)
                step.undo(self._ctx(r.plan, r))
            j.write("undo_done", step=step.name)
            self.boundary(f"undone:{step.name}")
        result = self._result(op, replay(j.read()), "undone")
        j.write("end", outcome="undone", result=result)
        j.archive()
        return result

    def _recover(self) -> dict[str, Any] | None:
        """Finish or undo an interrupted operation; None when there was none."""
        j = self.journal()
        records = j.read()
        if not records:
            return None
        r = replay(records)
        if r.ended:
            j.archive()
            return None
        op = OPERATIONS.get(r.op)
        if op is None:
            raise OperationFailed(f"the journal {j.path} names an unknown operation {r.op!r}")
        if decide(op, r) == "finish":
            return {**self._forward(op, j), "recovered": True}
        try:
            return {**self._undo(op, j, reason="interrupted"), "recovered": True}
        except Exception as error:
            raise OperationFailed(f"undoing the interrupted {op.name} failed: {error}; "
                                  "re-run to try again") from error

    def _result(self, op: Operation, r: Replay, outcome: str) -> dict[str, Any]:
        steps = {n: s.seconds for n, s in r.steps.items() if s.done}
        frozen = r.steps.get("freeze")
        switched = r.steps.get("switch")
        window: float | None = None
        if frozen and frozen.done:
            start = float(frozen.data.get("frozen_at", 0))
            if switched and switched.done:
                window = window_end(switched.data) - start
            elif outcome == "undone":
                window = self.clock() - start
        result: dict[str, Any] = {
            "op": op.name, "id": r.op_id, "outcome": outcome, "changed": True,
            "from": r.plan.get("live"), "to": r.plan.get("idle"),
            "live": r.plan.get("idle") if outcome == "done" else r.plan.get("live"),
            "maintenance_seconds": None if window is None else round(window, 2),
            "step_seconds": steps,
        }
        if frozen and frozen.done and "drain" in frozen.data:
            result["drain"] = frozen.data["drain"]
        if op.name == "upgrade":
            result["upgrade_php_seconds"] = steps.get("upgrade_php")
            copied = r.steps.get("copy_db")
            if copied and copied.done:
                result["db_copy"] = {k: v for k, v in copied.data.items()
                                     if k in ("mode", "why", "from", "to", "events", "seconds")}
            cron = r.steps.get("cron")
            if cron and cron.done:
                result["cron_check"] = cron.data
            kept = r.steps.get("keep_writes")
            if kept and kept.data:
                result["kept_writes"] = kept.data
        if op.name == "rollback" and "count_writes" in r.steps:
            result["written_since_switch"] = r.steps["count_writes"].data
        failed = [s.error for s in r.steps.values() if s.error]
        if failed:
            result["error"] = failed[-1]
        return result


def _done(j: Journal, step: str) -> bool:
    s = replay(j.read()).steps.get(step)
    return bool(s and s.done)


def decide(op: Operation, r: Replay) -> str:
    """What a re-run does with an open journal: "finish" or "undo"."""
    if r.undoing:
        return "undo"
    por = r.steps.get(op.point_of_no_return)
    return "finish" if por is not None and por.done else "undo"


def describe_open(state_dir: Path) -> dict[str, Any] | None:
    """The open journal, for ``status``: how far it got and what a re-run will do."""
    j = Journal(state_dir)
    records = j.read()
    if not records:
        return None
    r = replay(records)
    if r.ended:
        return None
    op = OPERATIONS.get(r.op)
    if op is None:
        return {"op": r.op, "next": "unknown operation"}
    action = decide(op, r)
    done = [s.name for s in op.steps if r.steps.get(s.name) and r.steps[s.name].done]
    running = [s.name for s in op.steps
               if r.steps.get(s.name) and r.steps[s.name].started and not r.steps[s.name].done]
    if action == "finish":
        todo = [s.name for s in op.steps if s.name not in done]
    else:
        todo = [f"undo {s.name}" for s in reversed(op.steps)
                if r.steps.get(s.name) and r.steps[s.name].started
                and not r.steps[s.name].undone and s.undo is not None]
    return {
        "op": r.op, "id": r.op_id, "started_at": r.started_at,
        "from": r.plan.get("live"), "to": r.plan.get("idle"),
        "steps_done": done, "interrupted_in": running,
        "passed_point_of_no_return": action == "finish" and not r.undoing,
        "undoing": r.undoing,
        "next": action,
        "will_run": todo,
        "site_after": r.plan.get("idle") if action == "finish" else r.plan.get("live"),
    }
