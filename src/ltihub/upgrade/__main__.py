"""CLI: ``python -m ltihub.upgrade {upgrade,rollback,switch,status,resume,check-upgrade}
--config PATH``.

``check-upgrade [--discard-writes]`` changes nothing: it says (exit 2) whether an upgrade
would be refused for rows and files a rollback left behind on the idle colour, so that the
role can stop before it prepares anything.

``switch --to COLOUR [--reason WORD]`` makes a colour prepared outside the program live
(a restore into the idle colour).

Prints one JSON object on stdout. Exit 0: done (or nothing to do); 1: the operation failed
(the JSON's ``error`` says how the site was left); 2: refused before anything changed, or
another operation is running; 3: bad configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from .config import ConfigError, load_config
from .engine import Boundary, Engine, OperationFailed, Refused
from .host import SubprocessRunner, UrllibHttp
from .journal import Busy
from .status import status

# TEST HOOK (integration tests only): when set to a step boundary label such as
# "after:copy_db" or "start:upgrade_php" (see Engine.boundary), the program SIGKILLs itself
# there, as a dying SSH session or an OOM kill would. Never set in production.
TEST_KILL_AT = "LTIHUB_UPGRADE_TEST_KILL_AT"


def kill_hook(environ: Mapping[str, str] | None = None) -> Boundary:
    """The boundary callback of the test hook (does nothing unless TEST_KILL_AT is set)."""
    label = (os.environ if environ is None else environ).get(TEST_KILL_AT, "")

    def boundary(at: str) -> None:
        if label and at == label:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    return boundary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ltihub.upgrade", description=__doc__)
    parser.add_argument("command",
                        choices=("upgrade", "rollback", "switch", "status", "resume",
                                 "check-upgrade"))
    parser.add_argument("--config", required=True, help="the role's JSON file (root-only)")
    parser.add_argument("--to", default="", help="switch: the colour to make live")
    parser.add_argument("--reason", default="switch", help="switch: what the fact records")
    parser.add_argument("--discard-writes", action="store_true",
                        help="check-upgrade: as with discard_writes in the configuration")
    args = parser.parse_args(argv)
    out: dict[str, Any]
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(json.dumps({"error": str(error)}))
        return 3
    if args.command == "status":
        print(json.dumps(status(config), indent=2, sort_keys=True))
        return 0
    if args.discard_writes:
        config = replace(config, discard_writes=True)
    engine = Engine(config, SubprocessRunner(), UrllibHttp(config.ca_file),
                    boundary=kill_hook())
    code = 0
    try:
        if args.command == "upgrade":
            out = engine.upgrade()
        elif args.command == "rollback":
            out = engine.rollback()
        elif args.command == "switch":
            out = engine.switch(args.to, args.reason)
        elif args.command == "check-upgrade":
            out = engine.check_upgrade()
        else:
            out = engine.resume()
    except (Refused, Busy) as error:
        out, code = {"error": str(error), "changed": False}, 2
    except OperationFailed as error:
        out, code = {"error": str(error), "changed": True}, 1
    print(json.dumps(out, indent=2, sort_keys=True))
    if code:
        print(out["error"], file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
