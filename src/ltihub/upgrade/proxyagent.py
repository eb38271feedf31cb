"""The blue-green program's hand on a front proxy that is another host.

It is the forced command (authorized_keys ``restrict,command="..."``) of the one ssh key the
Moodle host's blue-green program holds for the proxy's root account, so that key can do
nothing but this. What the client asked for arrives in ``SSH_ORIGINAL_COMMAND``; exactly
these requests are accepted:

``point blue`` / ``point green``
    move the upstream link to ``<upstream dir>/<colour>.conf`` in one rename (a new link
    beside it, then ``rename``); refused when that file is missing.
``test``
    ``nginx -t``
``reload``
    ``systemctl reload nginx`` (graceful)
``show``
    print the colour the link points at.

Anything else (other words, extra arguments, shell metacharacters, other colours) is
refused with exit code 2 and one line on stderr, before anything is done. The paths come
from this program's own arguments in the forced command, never from the client.

Standard library only: it runs as ``python3 -I <file>`` on a host that has nothing else
of this project.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence

COLOURS = ("blue", "green")
REFUSED = 2
FAILED = 1

Runner = Callable[[Sequence[str]], int]


class Refusal(Exception):
    """The request is not one of the accepted ones (a sentence for the client)."""


def parse_request(text: str) -> tuple[str, ...]:
    """The request as a tuple of words, or Refusal. Words are split on single spaces only:
    the command never goes near a shell, and anything unusual is refused rather than read."""
    if not text:
        raise Refusal("no request (this key only runs the proxy agent)")
    if len(text) > 64 or not all(c.isascii() and (c.isalnum() or c == " ") for c in text):
        raise Refusal("the request has characters other than letters, digits and spaces")
    words = tuple(text.split(" "))
    if words in (("test",), ("reload",), ("show",)):
        return words
    if len(words) == 2 and words[0] == "point" and words[1] in COLOURS:
        return words
    raise Refusal(f"not an accepted request: {text!r} (point blue|green, test, reload, show)")


def atomic_symlink(target: str, link: str) -> None:
    """Point ``link`` at ``target`` in one rename (never a moment without the link). Also
    what the program itself uses on the Moodle host (ltihub.upgrade.steps)."""
    tmp = f"{link}.mjp-new"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def point(upstream_dir: str, link: str, colour: str) -> None:
    """Point ``link`` at ``<upstream_dir>/<colour>.conf``: never a moment without the link."""
    target = os.path.join(upstream_dir, f"{colour}.conf")
    if not os.path.isfile(target):
        raise Refusal(f"{target} is missing: nothing was changed")
    atomic_symlink(target, link)


def show(upstream_dir: str, link: str) -> str:
    """The colour the link points at ('' when it points elsewhere or is no link)."""
    try:
        target = os.readlink(link)
    except OSError:
        return ""
    for colour in COLOURS:
        if target == os.path.join(upstream_dir, f"{colour}.conf"):
            return colour
    return ""


def _run(argv: Sequence[str]) -> int:
    return subprocess.run(list(argv), check=False).returncode  # noqa: S603 - fixed argv


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None,
         run: Runner = _run) -> int:
    parser = argparse.ArgumentParser(
        prog="proxyagent", description="The forced command of the blue-green switch's key.")
    parser.add_argument("--upstream-dir", required=True,
                        help="folder of the colour files, <colour>.conf")
    parser.add_argument("--link", required=True, help="the link nginx reads")
    args = parser.parse_args(argv)
    environ = os.environ if env is None else env
    try:
        request = parse_request(environ.get("SSH_ORIGINAL_COMMAND", ""))
        if request[0] == "point":
            point(args.upstream_dir, args.link, request[1])
            return 0
    except Refusal as refusal:
        print(f"proxyagent: refused: {refusal}", file=sys.stderr)
        return REFUSED
    except OSError as error:
        print(f"proxyagent: failed: {error}", file=sys.stderr)
        return FAILED
    if request[0] == "show":
        colour = show(args.upstream_dir, args.link)
        if not colour:
            print(f"proxyagent: {args.link} points at no colour", file=sys.stderr)
            return FAILED
        print(colour)
        return 0
    if request[0] == "test":
        return FAILED if run(["nginx", "-t"]) else 0
    return FAILED if run(["systemctl", "reload", "nginx"]) else 0


if __name__ == "__main__":
    sys.exit(main())
