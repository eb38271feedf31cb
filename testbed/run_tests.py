#!/usr/bin/env python3
"""Run the stages of ``make test``, some side by side, and print a table of their times.

Each stage is one command (a make target or one molecule scenario). A stage starts when
the stages it waits for have passed and a job slot is free (``--jobs``, default 2: CI has
two cores). With one job the output streams as it comes; with more, each stage writes
to ``.cache/test-logs/<stage>.log`` and its log is printed, whole, when it ends, so the
output of two stages never interleaves. After the first failure no new stage starts,
the running ones finish (molecule destroys its hosts), and the run fails.

The last lines are a short digest of why each failed stage failed (pytest's failed tests,
else Ansible's ``fatal:`` lines, else a crashed tool's traceback), then the table and
``stages: N passed, N failed``: a CI that keeps only the tail of the output still shows
the cause.

Usage: run_tests.py [--jobs N] [--scenarios 'A B'] [--distro DISTRO] [--list]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import yaml

REPO = Path(__file__).resolve().parents[1]
LOG_DIR = REPO / ".cache" / "test-logs"


@dataclass(frozen=True)
class Stage:
    """One step of the run: a name, a command and the stages it waits for."""

    name: str
    argv: tuple[str, ...]
    after: tuple[str, ...] = ()


@dataclass
class Result:
    stage: Stage
    started: float
    ended: float = 0.0
    returncode: int | None = None
    log: Path | None = None

    @property
    def seconds(self) -> float:
        return self.ended - self.started


def molecule(scenario: str, after: tuple[str, ...] = ()) -> Stage:
    return Stage(f"molecule {scenario}", ("molecule", "test", "-s", scenario), after)


def default_stages(scenarios: Sequence[str], distro: str = "debian12") -> list[Stage]:
    """The plan of ``make test``: the images, checks, unit tests and the molecule scenarios.

    ``scenarios`` comes longest first. Scenarios are independent (own hosts, own Docker
    network), so with two jobs two run side by side. Stages start in list order as slots
    free, and the list is longest first (the classic rule for filling two slots evenly):
    the two longest scenarios start at once, the shorter one follows in whichever slot
    frees first, the unit tests and lint fill in at the end. Nothing waits for lint: a
    green run needs every stage anyway.

    Two images come first, side by side: the test hosts' (``build_image.py``: a debootstrap
    on a new machine, a check of its recipe hash otherwise) and the notebook images' base
    (``build_notebook_base.py``, a debootstrap of about a minute). Every scenario waits for
    the host image, and only the scenarios with hubs (see :func:`has_hubs`) for the base,
    so ``moodle_ops`` starts as soon as the host image is there. The unit tests and lint do
    not need the host image but wait for it too: on a new machine they would otherwise take
    the slot the notebook base frees, before the scenarios, the longest path, could start.
    """
    image = Stage("host image", (sys.executable, str(REPO / "testbed" / "build_image.py"),
                                 distro))
    lint = Stage("lint", ("make", "--no-print-directory", "lint"), (image.name,))
    unit = Stage("unit", ("make", "--no-print-directory", "unit"), (image.name,))
    images = [image]
    after: dict[str, tuple[str, ...]] = {s: (image.name,) for s in scenarios}
    with_hubs = [s for s in scenarios if has_hubs(s)]
    if with_hubs:
        base = Stage("notebook base",
                     (sys.executable, str(REPO / "testbed" / "build_notebook_base.py")))
        images.append(base)
        after.update({s: (image.name, base.name) for s in with_hubs})
    return [*images, *(molecule(s, after=after[s]) for s in scenarios), unit, lint]


def has_hubs(scenario: str) -> bool:
    """Whether a scenario's hosts include a JupyterHub host (they build notebook images)."""
    config = REPO / "molecule" / scenario / "molecule.yml"
    if not config.is_file():
        return False
    platforms = yaml.safe_load(config.read_text()).get("platforms") or []
    return any("jupyterhub" in (p.get("groups") or []) for p in platforms)


@dataclass
class Runner:
    stages: list[Stage]
    jobs: int
    out: IO[str] = field(default_factory=lambda: sys.stdout)
    results: dict[str, Result] = field(default_factory=dict)
    t0: float = field(default_factory=time.monotonic)

    def say(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"\033[1m==> [{stamp}] {text}\033[0m", file=self.out, flush=True)

    def ready(self, stage: Stage) -> bool:
        return all(
            name in self.results and self.results[name].returncode == 0 for name in stage.after
        )

    def failed(self) -> bool:
        return any(r.returncode not in (0, None) for r in self.results.values())

    def run(self) -> bool:
        pending = list(self.stages)
        running: dict[str, tuple[subprocess.Popen[bytes], Result]] = {}
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        while pending or running:
            while not self.failed() and len(running) < self.jobs:
                stage = next((s for s in pending if self.ready(s)), None)
                if stage is None:
                    break
                pending.remove(stage)
                running[stage.name] = self.start(stage)
            if not running:
                break  # a failure stopped the plan, or what is left waits for a failed stage
            time.sleep(1)
            for name, (proc, result) in list(running.items()):
                if proc.poll() is not None:
                    del running[name]
                    self.finish(proc, result)
        self.digest()
        self.table(pending)
        return not self.failed() and not pending

    def start(self, stage: Stage) -> tuple[subprocess.Popen[bytes], Result]:
        result = Result(stage, time.monotonic())
        self.results[stage.name] = result
        self.say(f"start {stage.name}: {' '.join(stage.argv)}")
        if self.jobs == 1:
            proc = subprocess.Popen(stage.argv, cwd=REPO)  # noqa: S603
        else:
            result.log = LOG_DIR / (stage.name.replace(" ", "-") + ".log")
            with result.log.open("wb") as log:
                proc = subprocess.Popen(  # noqa: S603
                    stage.argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
                )
        return proc, result

    def finish(self, proc: subprocess.Popen[bytes], result: Result) -> None:
        result.ended = time.monotonic()
        result.returncode = proc.returncode
        if result.log is not None:
            self.say(f"output of {result.stage.name} ({result.log}):")
            with result.log.open(errors="replace") as log:
                for line in log:
                    self.out.write(line)
            self.out.flush()
        verdict = "passed" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
        self.say(f"{result.stage.name} {verdict} in {fmt(result.seconds)}")

    def digest(self, max_lines: int = 6) -> None:
        """A few lines per failed stage that say why (see :func:`failure_causes`)."""
        for r in self.results.values():
            if r.returncode in (0, None) or r.log is None or not r.log.exists():
                continue
            with r.log.open(errors="replace") as log:
                causes = failure_causes(log)
            print(f"\nWhy {r.stage.name} failed ({len(causes)} found, last "
                  f"{min(len(causes), max_lines)}; whole log: {r.log}):", file=self.out)
            for line in causes[-max_lines:]:
                print("  " + line[:200], file=self.out)

    def table(self, not_run: Sequence[Stage]) -> None:
        total = time.monotonic() - self.t0
        rows = [("stage", "start", "time", "result")]
        for r in sorted(self.results.values(), key=lambda r: r.started):
            verdict = "passed" if r.returncode == 0 else "FAILED"
            rows.append((r.stage.name, fmt(r.started - self.t0), fmt(r.seconds), verdict))
        rows += [(s.name, "-", "-", "not run") for s in not_run]
        rows.append(("total (wall clock)", "", fmt(total), ""))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        print("\nTimes of make test's stages:", file=self.out)
        for row in rows:
            print("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)),
                  file=self.out)
        passed = sum(1 for r in self.results.values() if r.returncode == 0)
        failed = len(self.results) - passed + len(not_run)
        print(f"stages: {passed} passed, {failed} failed", file=self.out, flush=True)


ANSI = re.compile(r"\x1b\[[0-9;]*m")
# The last line of a Python traceback: "TypeError: expected string ..."
TRACEBACK_END = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)(: |$)")


def strip_colour(line: str) -> str:
    return ANSI.sub("", line)


def clean(line: str) -> str:
    """A log line without colours and without the frame molecule draws around a step's output."""
    return strip_colour(line).strip().lstrip("│ ")


def failure_causes(lines: Iterable[str]) -> list[str]:
    """What in a stage's log names its failure: pytest's short summary, else `fatal:` tasks,
    else the last lines of tracebacks and molecule's ERROR lines (a tool that crashed).

    Tests that expect a playbook to fail log `fatal:` lines too, so when pytest names failed
    tests only those count. Molecule wraps its output at 80 columns: an entry of the summary
    is joined back from its continuation lines.
    """
    tests: list[str] = []
    fatal: list[str] = []
    other: list[str] = []
    in_summary = False
    for raw in lines:
        text = clean(raw)
        if "short test summary info" in text:
            in_summary = True
        elif in_summary:
            if text.startswith("=") and text.strip("=").strip():
                in_summary = False  # "=== 1 failed, 23 passed in ... ===" ends it
            elif text.startswith(("FAILED", "ERROR")):
                tests.append(text)
            elif tests and text and not text.startswith("="):
                tests[-1] += " " + text
        elif text.startswith("fatal: ["):
            fatal.append(text)
        elif TRACEBACK_END.match(text) or text.startswith("ERROR    "):
            other.append(text)  # a tool that crashed, or molecule naming the failed step
    return tests or fatal or other


def fmt(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("MJP_TEST_JOBS", "2")))
    parser.add_argument(
        "--scenarios", default=os.environ.get("MJP_TEST_SCENARIOS", "default moodle_ops")
    )
    parser.add_argument("--distro", default=os.environ.get("MOLECULE_DISTRO", "debian12"),
                        help="the test hosts' distribution (the host image to build)")
    parser.add_argument("--list", action="store_true", help="print the plan and exit")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    stages = default_stages(args.scenarios.split(), args.distro)
    if args.list:
        for s in stages:
            print(f"{s.name}: {' '.join(s.argv)}" + (f"  (after {', '.join(s.after)})"
                                                     if s.after else ""))
        return 0
    return 0 if Runner(stages, args.jobs).run() else 1


if __name__ == "__main__":
    sys.exit(main())
