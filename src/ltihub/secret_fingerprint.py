"""Fingerprints of the generated secrets, kept on the hosts that use them.

Secrets (database passwords, LTI secrets, hub keys and tokens) are generated on the
controller into the secrets folder and reused on every run. If that folder is lost, the
next run would silently generate new values and rotate them. Each host therefore keeps a
fingerprint of every secret it was deployed with (one root-only file per secret); the
run compares the value it is about to use with it and stops when they differ, unless the
operator accepted the rotation of that secret.

A fingerprint is a PBKDF2-HMAC-SHA256 of the secret with a random salt: it tells whether
a value is the same one, and nothing usable about the value itself.

Runs on the managed hosts through the role secrets_guard (its Ansible module imports this
file as a module_utils), so: standard library only, Python 3.9 compatible.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets as _random
import tempfile
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DIRECTORY = "/etc/mjp/secret-fingerprints"
ALGORITHM = "pbkdf2-sha256"
ITERATIONS = 100_000  # the secrets are random; a few tenths of a second per host per run
SALT_BYTES = 16
ACCEPT_ALL = "all"
ACCEPT_VARIABLE = "mjp_secrets_accept_rotation"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")


class FingerprintError(ValueError):
    """A fingerprint file that cannot be read as one."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise FingerprintError(f"{what} is not a string")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise FingerprintError(f"{what} is not base64") from exc


def _derive(secret: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", secret.encode("utf-8"), salt, iterations)


@dataclass(frozen=True)
class Fingerprint:
    """A salted, slow hash of one secret, and when it was recorded."""

    salt: bytes
    digest: bytes
    iterations: int
    created: str

    @classmethod
    def of(
        cls,
        secret: str,
        *,
        salt: bytes | None = None,
        iterations: int = ITERATIONS,
        created: str | None = None,
    ) -> Fingerprint:
        if iterations < 1:
            raise ValueError("iterations must be positive")
        salt = _random.token_bytes(SALT_BYTES) if salt is None else salt
        when = created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return cls(salt=salt, digest=_derive(secret, salt, iterations), iterations=iterations,
                   created=when)

    def matches(self, secret: str) -> bool:
        return hmac.compare_digest(self.digest, _derive(secret, self.salt, self.iterations))

    def to_text(self) -> str:
        return json.dumps(
            {
                "algorithm": ALGORITHM,
                "iterations": self.iterations,
                "salt": _b64(self.salt),
                "digest": _b64(self.digest),
                "created": self.created,
            },
            sort_keys=True,
        ) + "\n"

    @classmethod
    def from_text(cls, text: str) -> Fingerprint:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise FingerprintError("not JSON") from exc
        if not isinstance(data, dict) or data.get("algorithm") != ALGORITHM:
            raise FingerprintError(f"not a {ALGORITHM} fingerprint")
        iterations = data.get("iterations")
        if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 1:
            raise FingerprintError("bad iteration count")
        salt = _unb64(data.get("salt"), "salt")
        digest = _unb64(data.get("digest"), "digest")
        if len(digest) != hashlib.sha256().digest_size or not salt:
            raise FingerprintError("bad salt or digest length")
        created = data.get("created", "")
        return cls(salt=salt, digest=digest, iterations=iterations,
                   created=created if isinstance(created, str) else "")


@dataclass(frozen=True)
class Secret:
    """One secret a role is about to use: its fingerprint name, value and, for the
    message, the controller file it normally comes from."""

    name: str
    value: str
    file: str = ""


@dataclass(frozen=True)
class Mismatch:
    name: str
    file: str
    recorded: str  # when the host's fingerprint was made ("" if unknown)
    reason: str  # "changed" or a description of an unreadable fingerprint file


@dataclass
class GuardResult:
    recorded: list[str] = field(default_factory=list)  # first fingerprint written
    unchanged: list[str] = field(default_factory=list)
    rotated: list[str] = field(default_factory=list)  # accepted new value, fingerprint renewed
    skipped: list[str] = field(default_factory=list)  # empty values: nothing to protect
    mismatched: list[Mismatch] = field(default_factory=list)

    @property
    def refused(self) -> bool:
        return bool(self.mismatched)

    @property
    def changed(self) -> bool:
        return not self.refused and bool(self.recorded or self.rotated)


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(
            f"secret name {name!r}: use lower-case letters, digits, '.', '_' or '-' "
            "(it is a file name)"
        )
    return name


def read_fingerprint(path: Path) -> Fingerprint | None:
    """The fingerprint in path, None if there is none; FingerprintError if unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise FingerprintError(f"cannot read it ({exc.__class__.__name__})") from exc
    return Fingerprint.from_text(text)


def write_fingerprint(path: Path, fingerprint: Fingerprint) -> None:
    """Write atomically, mode 0600 (the folder 0700), owned by the running user (root)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        os.fchmod(handle, 0o600)
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(fingerprint.to_text())
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def guard(
    directory: Path,
    secrets: Sequence[Secret],
    accept_rotation: Collection[str] = (),
    *,
    write: bool = True,
    iterations: int = ITERATIONS,
) -> GuardResult:
    """Compare each secret with its fingerprint in directory.

    No fingerprint yet: one is recorded. Same value: nothing happens. A different value
    (or an unreadable fingerprint) is a mismatch unless its name (or "all") is in
    accept_rotation, in which case the fingerprint is renewed. If any mismatch remains,
    nothing at all is written. write=False (check mode) writes nothing either way.
    """
    names = [check_name(secret.name) for secret in secrets]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"secret names given twice: {', '.join(duplicates)}")
    accept_all = ACCEPT_ALL in accept_rotation
    result = GuardResult()
    to_write: list[tuple[Path, Secret]] = []
    for secret in secrets:
        if secret.value == "":
            result.skipped.append(secret.name)
            continue
        path = directory / secret.name
        try:
            known = read_fingerprint(path)
        except FingerprintError as exc:
            known, reason = None, f"its fingerprint {path} is unreadable: {exc}"
        else:
            if known is None:
                result.recorded.append(secret.name)
                to_write.append((path, secret))
                continue
            if known.matches(secret.value):
                result.unchanged.append(secret.name)
                continue
            reason = "changed"
        if accept_all or secret.name in accept_rotation:
            result.rotated.append(secret.name)
            to_write.append((path, secret))
        else:
            recorded = known.created if known is not None else ""
            result.mismatched.append(Mismatch(secret.name, secret.file, recorded, reason))
    if write and not result.refused:
        for path, secret in to_write:
            write_fingerprint(path, Fingerprint.of(secret.value, iterations=iterations))
    return result


def refusal_message(mismatches: Sequence[Mismatch], directory: str = DEFAULT_DIRECTORY) -> str:
    """What the operator reads when the run stops: which secrets, why, what to do."""
    lines = []
    for item in mismatches:
        where = f" (controller file {item.file})" if item.file else ""
        if item.reason == "changed":
            since = f" since {item.recorded}" if item.recorded else ""
            lines.append(
                f"- {item.name}{where}: not the value this host has used{since}"
            )
        else:
            lines.append(f"- {item.name}{where}: {item.reason}")
    names = ",".join(item.name for item in mismatches)
    return (
        "Stopped before changing secrets this host already uses (fingerprints in "
        f"{directory}):\n" + "\n".join(lines) + "\n"
        "Most likely the controller's secrets folder (mjp_secrets_dir) was lost or "
        "replaced, and this run generated new values instead of reusing the old ones. "
        "Nothing was changed on this host. Either restore the secrets folder from your "
        "backup (the files named above; a file this run just generated is to be "
        "overwritten) or put back the old value of a variable you set yourself (vault), "
        "then run again; or, to rotate these secrets on purpose, run again with "
        f"-e {ACCEPT_VARIABLE}={names}"
    )
