"""``ltihub-launch``: perform an LTI 1.1 launch exactly as Moodle does, then wait.

Posts a signed basic-launch form to the hub, asks the hub to spawn, polls the
hub API until the user's server is ready, and prints a JSON report. With ``--open``
it then loads the server's start page as the browser would (through the proxy and
the hub's OAuth redirects) and reports its final URL, status and title.
Exit codes: 0 server up, 1 launch refused, 2 timeout or error.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import requests

from .htmltext import error_message_from_page
from .oauth1 import sign_launch

__all__ = ["LaunchReport", "build_launch_params", "main", "moodle_custom_name", "sign_launch"]

EXIT_UP, EXIT_REFUSED, EXIT_ERROR = 0, 1, 2
SECRET_ENV = "LTIHUB_SECRET"  # noqa: S105 - the name of an environment variable
KEY_ENV = "LTIHUB_KEY"
_LAUNCH_SUFFIX = "/hub/lti/launch"


@dataclass
class LaunchReport:
    result: str  # ok | refused | failed | timeout | error
    http_status: int | None = None
    message: str | None = None
    seconds: float | None = None
    user: str | None = None
    server_url: str | None = None
    page_url: str | None = None  # --open: where the browser ends up (e.g. .../lab)
    page_status: int | None = None
    page_title: str | None = None  # "JupyterLab" when JupyterLab answered

    @property
    def exit_code(self) -> int:
        if self.result == "ok":
            return EXIT_UP
        if self.result == "refused":
            return EXIT_REFUSED
        return EXIT_ERROR

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)


def moodle_custom_name(name: str) -> str:
    """mod_lti's custom parameter naming: lower-case, then every BYTE outside [a-z0-9] -> '_'.

    A multibyte character becomes one '_' per UTF-8 byte (``レ`` -> ``___``), as in Moodle.
    """
    name = name.strip()
    if name.startswith("custom_"):
        name = name[len("custom_") :]
    mapped = re.sub(rb"[^a-z0-9]", b"_", name.lower().encode())
    return "custom_" + mapped.decode("ascii")


def mod_lti_split(line: str) -> tuple[str, str] | None:
    """Split one ``name=value`` line as mod_lti does, its multibyte bug included.

    mod_lti finds '=' as a BYTE offset and cuts the line at that CHARACTER offset, so a
    name with multibyte characters takes part of the value with it:
    ``lms_sub_レポート1_close=1893452400`` -> (``lms_sub_レポート1_close=1893452``, ``00``).
    None for a line without '='.
    """
    if "=" not in line:
        return None
    offset = len(line[: line.index("=")].encode())
    return line[:offset].strip(), line[offset + 1 :].strip()


def parse_custom_text(text: str) -> dict[str, str]:
    """A custom-parameter file: a JSON object, or Moodle's ``name=value`` lines."""
    stripped = text.strip()
    if stripped.startswith("{"):
        data = json.loads(stripped)
        if not isinstance(data, dict):
            raise ValueError("a JSON custom file must hold one object")
        return {str(k): str(v) for k, v in data.items()}
    result: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        pair = mod_lti_split(line)
        if pair is None:
            raise ValueError(f"custom line without '=': {line!r}")
        result[pair[0]] = pair[1]
    return result


def parse_custom_pairs(pairs: Sequence[str]) -> dict[str, str]:
    """``--custom name=value`` arguments, split as mod_lti splits Moodle's lines."""
    result: dict[str, str] = {}
    for pair in pairs:
        split = mod_lti_split(pair)
        if split is None or not pair.partition("=")[0].strip():
            raise ValueError(f"--custom needs name=value, got {pair!r}")
        name, _ = split
        # mod_lti trims values; keep ours as given (tests send values with spaces).
        result[name] = pair[len(name) + 1 :] if pair.startswith(name + "=") else split[1]
    return result


def default_user_id(username: str) -> str:
    """A stable Moodle-like numeric id for a user name (when --user-id is not given)."""
    return str(int(hashlib.sha256(username.encode()).hexdigest()[:8], 16) % 900_000 + 100)


def build_launch_params(
    *,
    username: str,
    user_id: str,
    teacher: bool,
    course_id: str,
    course_title: str,
    resource_link_id: str,
    moodle_url: str,
    custom: Mapping[str, str],
    target: str = "window",
) -> dict[str, str]:
    """The unsigned form fields of a Moodle (mod_lti) LTI 1.1 basic launch."""
    moodle = moodle_url.rstrip("/")
    given, _, family = username.partition(".")
    params = {
        "lti_message_type": "basic-lti-launch-request",
        "lti_version": "LTI-1p0",
        "resource_link_id": resource_link_id,
        "resource_link_title": f"JupyterLab {resource_link_id}",
        "resource_link_description": "",
        "user_id": user_id,
        "lis_person_sourcedid": "",
        "roles": "Instructor" if teacher else "Learner",
        "context_id": course_id,
        "context_label": f"C{course_id}",
        "context_title": course_title,
        "context_type": "CourseSection",
        "lis_person_name_given": given or username,
        "lis_person_name_family": family or "User",
        "lis_person_name_full": f"{given or username} {family or 'User'}",
        "lis_person_contact_email_primary": f"{username}@invalid.example",
        "ext_user_username": username,
        "ext_lms": "moodle-2",
        "lis_result_sourcedid": json.dumps(
            {"data": {"instanceid": resource_link_id, "userid": user_id}}
        ),
        "lis_outcome_service_url": f"{moodle}/mod/lti/service.php",
        "launch_presentation_locale": "en",
        "launch_presentation_document_target": target,
        "launch_presentation_return_url": (
            f"{moodle}/mod/lti/return.php?course={course_id}&launch_container=4"
        ),
        "tool_consumer_info_product_family_code": "moodle",
        "tool_consumer_info_version": "2024100700",
        "tool_consumer_instance_guid": urlsplit(moodle).hostname or "moodle",
        "tool_consumer_instance_name": "Moodle",
        "tool_consumer_instance_description": "Moodle",
    }
    for name, value in custom.items():
        params[moodle_custom_name(name)] = value
    return params


def hub_base_from_launch_url(url: str) -> str:
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    prefix = path[: -len(_LAUNCH_SUFFIX)] if path.endswith(_LAUNCH_SUFFIX) else ""
    return urlunsplit((parts.scheme, parts.netloc, prefix, "", ""))


def read_secret(args: argparse.Namespace) -> str:
    if args.secret_file:
        return Path(args.secret_file).read_text(encoding="utf-8").strip()
    if args.secret:
        return str(args.secret)
    env = os.environ.get(SECRET_ENV, "").strip()
    if env:
        return env
    raise ValueError(f"no shared secret: use --secret-file, ${SECRET_ENV} or --secret")


def _failure(response: requests.Response, t0: float, user: str | None) -> LaunchReport:
    status = response.status_code
    message = error_message_from_page(response.text, response.headers.get("Content-Type", ""))
    return LaunchReport(
        result="refused" if 400 <= status < 500 else "error",
        http_status=status,
        message=message,
        seconds=round(time.monotonic() - t0, 3),
        user=user,
    )


def _server_state(session: requests.Session, hub: str, user: str) -> dict[str, Any] | None:
    response = session.get(f"{hub}/hub/api/users/{quote(user)}", timeout=30)
    if response.status_code != 200:
        return None
    servers = response.json().get("servers") or {}
    server = servers.get("")
    return server if isinstance(server, dict) else {}


def _spawn_failure_message(session: requests.Session, hub: str, user: str) -> str | None:
    """The last progress event of a failed spawn, as the spawn-pending page shows it."""
    url = f"{hub}/hub/api/users/{quote(user)}/server/progress"
    try:
        with session.get(url, stream=True, timeout=10) as response:
            if response.status_code != 200:
                return error_message_from_page(
                    response.text, response.headers.get("Content-Type", "")
                )
            last: str | None = None
            for raw in response.iter_lines():
                line = raw.decode("utf-8", "replace")
                if line.startswith("data:"):
                    event = json.loads(line[5:])
                    last = str(event.get("message") or last or "")
                    if event.get("failed") or event.get("ready"):
                        break
            return last
    except (requests.RequestException, ValueError):
        return None


def run_launch(
    session: requests.Session,
    *,
    url: str,
    hub: str,
    form: Mapping[str, str],
    timeout: float,
    poll_interval: float,
) -> LaunchReport:
    t0 = time.monotonic()
    response = session.post(url, data=dict(form), allow_redirects=False, timeout=30)
    if response.status_code >= 400:
        return _failure(response, t0, None)

    who = session.get(f"{hub}/hub/api/user", timeout=30)
    if who.status_code != 200:
        return _failure(who, t0, None)
    user = str(who.json()["name"])

    state = _server_state(session, hub, user)
    if not (state and (state.get("ready") or state.get("pending"))):
        spawn = session.get(f"{hub}/hub/spawn", allow_redirects=False, timeout=max(timeout, 30))
        if spawn.status_code >= 400:
            return _failure(spawn, t0, user)

    deadline = t0 + timeout
    while True:
        state = _server_state(session, hub, user)
        if state and state.get("ready"):
            return LaunchReport(
                result="ok",
                http_status=200,
                seconds=round(time.monotonic() - t0, 3),
                user=user,
                server_url=f"{hub}{state.get('url', '')}",
            )
        if state is not None and not state.get("pending"):
            return LaunchReport(
                result="failed",
                message=_spawn_failure_message(session, hub, user) or "the server stopped",
                seconds=round(time.monotonic() - t0, 3),
                user=user,
            )
        if time.monotonic() >= deadline:
            return LaunchReport(
                result="timeout",
                message=f"server not ready after {timeout:g} seconds",
                seconds=round(time.monotonic() - t0, 3),
                user=user,
            )
        time.sleep(poll_interval)


def page_title(html: str) -> str | None:
    match = re.search(r"<title[^>]*>(.*?)</title>", html, re.IGNORECASE | re.DOTALL)
    return " ".join(match.group(1).split()) if match else None


def open_server(session: requests.Session, report: LaunchReport) -> LaunchReport:
    """Load the ready server's start page with the user's cookies, following redirects."""
    if report.result != "ok" or not report.server_url:
        return report
    page = session.get(report.server_url, allow_redirects=True, timeout=60)
    report.page_url, report.page_status = page.url, page.status_code
    report.page_title = page_title(page.text)
    if page.status_code != 200:
        report.result = "failed"
        report.message = f"the server is up but its page answered HTTP {page.status_code}"
    return report


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ltihub-launch",
        description="Perform a Moodle-style LTI 1.1 launch against a hub and wait for the "
        "user's server. Exit 0 = up, 1 = refused, 2 = timeout/error.",
    )
    p.add_argument("--url", required=True, help="launch URL, e.g. https://hub/hub/lti/launch")
    p.add_argument("--hub-url", help="hub base URL (default: derived from --url)")
    p.add_argument("--key", default=os.environ.get(KEY_ENV), help=f"consumer key (${KEY_ENV})")
    p.add_argument("--secret", help=f"shared secret (prefer --secret-file or ${SECRET_ENV})")
    p.add_argument("--secret-file", help="file holding the shared secret")
    p.add_argument("--user", required=True, help="Moodle user name (ext_user_username)")
    p.add_argument("--user-id", help="Moodle user id (default: stable number from --user)")
    p.add_argument(
        "--teacher",
        action="store_true",
        help="roles=Instructor; also puts the user in lms_teachers unless that is given",
    )
    p.add_argument("--course-id", default="2", help="context_id (default 2)")
    p.add_argument("--course-title", default="Test course")
    p.add_argument("--resource-link-id", default="1")
    p.add_argument(
        "--moodle-url",
        default="https://moodle.example.test",
        help="Moodle wwwroot; gives lis_outcome_service_url",
    )
    p.add_argument(
        "--custom",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="custom parameter, repeatable (e.g. lms_image=repo:tag)",
    )
    p.add_argument("--custom-file", help="JSON object or Moodle name=value lines")
    p.add_argument("--nonce", help="force oauth_nonce (replay tests)")
    p.add_argument("--timestamp", help="force oauth_timestamp (clock-skew tests)")
    p.add_argument("--ca-file", help="CA bundle that signs the hub's certificate")
    p.add_argument("--insecure", action="store_true", help="do not verify TLS (testing only)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait (default 300)")
    p.add_argument("--poll-interval", type=float, default=1.0)
    p.add_argument(
        "--open",
        action="store_true",
        help="then load the server's start page (e.g. JupyterLab) and report its title",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        if not args.key:
            raise ValueError(f"no consumer key: use --key or ${KEY_ENV}")
        secret = read_secret(args)
        custom: dict[str, str] = {}
        if args.custom_file:
            custom.update(parse_custom_text(Path(args.custom_file).read_text(encoding="utf-8")))
        custom.update(parse_custom_pairs(args.custom))
        if args.teacher and not any(moodle_custom_name(k) == "custom_lms_teachers" for k in custom):
            custom["lms_teachers"] = args.user
        params = build_launch_params(
            username=args.user,
            user_id=args.user_id or default_user_id(args.user),
            teacher=args.teacher,
            course_id=args.course_id,
            course_title=args.course_title,
            resource_link_id=args.resource_link_id,
            moodle_url=args.moodle_url,
            custom=custom,
        )
        form = sign_launch(args.url, args.key, secret, params, args.nonce, args.timestamp)
    except (OSError, ValueError) as exc:
        print(LaunchReport(result="error", message=str(exc)).to_json())
        return EXIT_ERROR

    session = requests.Session()
    session.headers["User-Agent"] = "ltihub-launch/0.1"
    session.verify = args.ca_file or not args.insecure
    if args.insecure:
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    try:
        report = run_launch(
            session,
            url=args.url,
            hub=(args.hub_url or hub_base_from_launch_url(args.url)).rstrip("/"),
            form=form,
            timeout=args.timeout,
            poll_interval=args.poll_interval,
        )
        if args.open:
            report = open_server(session, report)
    except (requests.RequestException, ValueError, KeyError) as exc:
        report = LaunchReport(result="error", message=f"{type(exc).__name__}: {exc}")
    print(report.to_json())
    return report.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
