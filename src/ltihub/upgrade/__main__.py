"""CLI: ``python -m ltihub.upgrade {upgrade,rollback,status,resume} --config PATH``.

Prints one JSON object on stdout. Exit 0: done (or nothing to do); 1: the operation failed
(the JSON's ``error`` says how the site was left); 2: refused before anything changed, or
another operation is running; 3: bad configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .config import ConfigError, load_config
from .engine import Engine, OperationFailed, Refused
from .host import SubprocessRunner, UrllibHttp
from .journal import Busy
from .status import status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ltihub.upgrade", description=__doc__)
    parser.add_argument("command", choices=("upgrade", "rollback", "status", "resume"))
    parser.add_argument("--config", required=True, help="the role's JSON file (root-only)")
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
    engine = Engine(config, SubprocessRunner(), UrllibHttp(config.ca_file))
    code = 0
    try:
        if args.command == "upgrade":
            out = engine.upgrade()
        elif args.command == "rollback":
            out = engine.rollback()
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
