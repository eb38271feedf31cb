"""What the learning-log proxy tells Moodle: launches, record kinds, the REST call.

mod_lticontainer's web service ``mod_lticontainer_write_nblogs`` stores one record per
call (``nb_logs[0]``), every field text and optional:

- ``host=ltictr`` (the browser opened a kernel websocket): ``inst_id``, ``lti_id``,
  ``session`` -> table ``lticontainer_session``;
- ``host=client`` (an ``execute_request`` of a notebook cell): ``session``, ``message``,
  ``date`` from its header, ``cell_id``, ``tags`` -> ``lticontainer_client_data`` (and
  ``lticontainer_tags`` for ``filename:`` / ``codenum:`` tags);
- ``host=server`` (the kernel's ``execute_reply``): ``status``, ``username``, ``date``
  from its header, ``session`` and ``message`` from its parent header ->
  ``lticontainer_server_data``.

The Moodle site, the activity and the token come from the LTI launch (custom
parameters ``lms_sessioninfo``, ``lms_serverurl``, ``lms_serverpath``,
``lms_rpctoken``); :class:`LaunchRegistry` keeps the last launch of each hub user.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from .logproxy_wire import KernelFrame
from .oauth1 import base_string_uri

log = logging.getLogger("ltihub.logproxy")

WSFUNCTION = "mod_lticontainer_write_nblogs"
REST_SCRIPT = "/webservice/rest/server.php"

Record = dict[str, str]


@dataclass(frozen=True)
class LaunchInfo:
    """The four launch values the log needs (``lms_sessioninfo`` split into its ids)."""

    inst_id: str
    lti_id: str
    server_url: str
    server_path: str
    rpc_token: str

    def endpoint(self) -> str:
        """Moodle's REST script for this launch, without the query (safe to log)."""
        path = self.server_path.strip("/")
        base = self.server_url.rstrip("/") + (f"/{path}" if path else "")
        return base + REST_SCRIPT

    def rest_url(self) -> str:
        """The full call URL; holds the token: never log it."""
        query = urlencode({"wsfunction": WSFUNCTION, "wstoken": self.rpc_token})
        return f"{self.endpoint()}?{query}"

    def __repr__(self) -> str:  # keep the token out of any accidental log line
        return (
            f"LaunchInfo(inst_id={self.inst_id!r}, lti_id={self.lti_id!r}, "
            f"endpoint={self.endpoint()!r}, rpc_token='***')"
        )


class LaunchRejected(ValueError):
    """A launch whose values cannot (or may not) be used for logging."""


def launch_from_form(
    form: Mapping[str, str], allowed_urls: Iterable[str] = ()
) -> LaunchInfo | None:
    """The :class:`LaunchInfo` of a launch POST, or None when it carries no log settings.

    ``allowed_urls``: if not empty, ``lms_serverurl`` must start with one of them (the
    token is sent there). Raises :class:`LaunchRejected` for unusable values.
    """
    token = form.get("custom_lms_rpctoken", "").strip()
    server_url = form.get("custom_lms_serverurl", "").strip()
    if not token or not server_url:
        return None
    parts = urlsplit(server_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LaunchRejected("lms_serverurl is not an http(s) URL")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as error:
        raise LaunchRejected("lms_serverurl has a port that is not a number") from error
    if parts.query or parts.fragment or parts.username or parts.password:
        raise LaunchRejected("lms_serverurl carries a query, fragment or credentials")
    allowed = list(allowed_urls)
    if allowed and not any(same_site_or_below(server_url, url) for url in allowed):
        raise LaunchRejected(f"Moodle {parts.scheme}://{parts.netloc} is not allowed")
    inst_id, _, lti_id = form.get("custom_lms_sessioninfo", "").partition(",")
    return LaunchInfo(
        inst_id=inst_id.strip(),
        lti_id=lti_id.strip(),
        server_url=server_url,
        server_path=form.get("custom_lms_serverpath", "").strip(),
        rpc_token=token,
    )


def same_site_or_below(url: str, allowed: str) -> bool:
    """Whether ``url`` is the Moodle site ``allowed`` or a path under it.

    mod_lticontainer sends ``lms_serverurl`` with the port written out
    (``https://moodle.example.edu:443``) while an operator writes the site as users see
    it. Both are compared in OAuth's normal form (:func:`ltihub.oauth1.base_string_uri`:
    scheme and host in lower case, no default port), which the launch signature already
    uses. An allowed entry without a host, or with a port that is not a number, matches
    nothing.
    """
    try:
        top = base_string_uri(allowed).rstrip("/")
        site = base_string_uri(url).rstrip("/")
    except ValueError:
        return False
    if not urlsplit(allowed).hostname:
        return False
    return site == top or site.startswith(top + "/")


class LaunchRegistry:
    """Hub user name -> its last launch, forgotten after ``ttl`` seconds unused.

    With ``state_file`` the map survives a restart of the proxy (the file holds tokens:
    it is written mode 0600, atomically).
    """

    def __init__(
        self,
        ttl: float = 12 * 3600,
        state_file: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ttl = ttl
        self.state_file = state_file
        self._clock = clock
        self._entries: dict[str, tuple[LaunchInfo, float]] = {}
        if state_file is not None:
            self._load(state_file)

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, user: str, launch: LaunchInfo | None) -> None:
        """Bind ``user`` to ``launch`` (None: this user's activity logs nothing)."""
        if launch is None:
            if self._entries.pop(user, None) is not None:
                self._save()
            return
        self._entries[user] = (launch, self._clock())
        self._save()

    def lookup(self, user: str) -> LaunchInfo | None:
        entry = self._entries.get(user)
        if entry is None:
            return None
        launch, seen = entry
        now = self._clock()
        if now - seen > self.ttl:
            del self._entries[user]
            self._save()
            return None
        self._entries[user] = (launch, now)
        return launch

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("launch state %s unreadable, starting empty: %s", path, type(exc).__name__)
            return
        now = self._clock()
        for user, item in data.get("launches", {}).items() if isinstance(data, dict) else ():
            try:
                seen = float(item.pop("seen"))
                launch = LaunchInfo(**{k: str(v) for k, v in item.items()})
            except (TypeError, ValueError, KeyError, AttributeError):
                continue
            if now - seen <= self.ttl:
                self._entries[str(user)] = (launch, seen)

    def _save(self) -> None:
        if self.state_file is None:
            return
        payload: dict[str, Any] = {
            "launches": {
                user: {**asdict(launch), "seen": seen}
                for user, (launch, seen) in self._entries.items()
            }
        }
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(payload, handle)
            os.replace(tmp, self.state_file)
        except OSError as exc:
            log.warning("cannot write launch state %s: %s", self.state_file, exc.strerror)


def hub_user_name(form: Mapping[str, str], username_key: str) -> str:
    """The hub user a launch logs in: the username field, normalised as JupyterHub does."""
    return form.get(username_key, "").strip().lower()


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def ltictr_record(launch: LaunchInfo, session: str) -> Record:
    """The browser opened a kernel websocket of ``session`` (its ``session_id``)."""
    return {
        "host": "ltictr",
        "inst_id": launch.inst_id,
        "lti_id": launch.lti_id,
        "session": session,
    }


def client_record(frame: KernelFrame) -> Record | None:
    """An ``execute_request`` of a notebook cell, or None for anything else.

    Only the header and metadata are read: the cell's code is never looked at.
    """
    if frame.msg_type() != "execute_request":
        return None
    metadata = frame.metadata()
    cell_id = metadata.get("cellId")
    if not isinstance(cell_id, str) or not cell_id:
        return None
    header = frame.header()
    tags = metadata.get("tags")
    return {
        "host": "client",
        "session": _text(header.get("session")),
        "message": _text(header.get("msg_id")),
        "cell_id": cell_id,
        # The module matches "filename: x" / "codenum: n" in the JSON text of the list.
        "tags": json.dumps(tags, ensure_ascii=False, separators=(",", ":")) if tags else "",
        "date": _text(header.get("date")),
    }


def server_record(frame: KernelFrame) -> Record | None:
    """The kernel's ``execute_reply`` (ok / error), or None for anything else."""
    if frame.msg_type() != "execute_reply":
        return None
    header = frame.header()
    parent = frame.parent_header()
    return {
        "host": "server",
        "status": _text(frame.content().get("status")),
        "username": _text(header.get("username")),
        "session": _text(parent.get("session")),
        "message": _text(parent.get("msg_id")),
        "date": _text(header.get("date")),
    }


def rest_body(record: Record) -> str:
    """The form body of one write_nblogs call: ``nb_logs[0][field]=value&...``."""
    return urlencode([(f"nb_logs[0][{key}]", value) for key, value in record.items()])


__all__ = [
    "LaunchInfo",
    "LaunchRegistry",
    "LaunchRejected",
    "Record",
    "client_record",
    "hub_user_name",
    "launch_from_form",
    "ltictr_record",
    "rest_body",
    "server_record",
]
