"""The one exception a refused launch raises."""

from __future__ import annotations


class LaunchRefused(Exception):  # noqa: N818 - the name says what the student sees
    """A launch that this hub will not start.

    ``str(exc)`` is a complete sentence meant for the student: it never holds a
    stack trace, a secret or an internal path of the hub.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message
