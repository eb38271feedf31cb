"""Reading PHP-FPM's status page for the drain (the answer as php-fpm 8.2 gives it through
cgi-fcgi, captured on Debian 12)."""

from __future__ import annotations

import pytest

from ltihub.upgrade.fpm import Busy, StatusUnreadable, begun_before, parse_status, status_cmd

PAGE = (
    "Expires: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
    "Cache-Control: no-cache, no-store, must-revalidate, max-age=0\r\n"
    "Content-Type: application/json\r\n\r\n"
    '{"pool":"moodle","process manager":"dynamic","start time":1795996905,"start since":2,'
    '"accepted conn":1,"listen queue":0,"idle processes":1,"active processes":1,'
    '"total processes":2, "processes":[{"pid":6203,"state":"Running","start time":1795996905,'
    '"start since":2,"requests":1,"request duration":1003322,"request method":"GET",'
    '"request uri":"\\/slow.php?s=4&sesskey=abc","content length":0,"user":"-",'
    '"script":"/var/www/slow.php","last request cpu":0.00,"last request memory":0},'
    '{"pid":6204,"state":"Idle","start time":1795996905,"start since":2,"requests":0,'
    '"request duration":0,"request method":"-","request uri":"-","content length":0,'
    '"user":"-","script":"-","last request cpu":0.00,"last request memory":0}]}'
)


def test_running_requests_are_read_with_their_age_and_script_only() -> None:
    assert parse_status(PAGE) == [Busy(6203, 1.003322, "/var/www/slow.php")]


def test_the_request_goes_in_the_environment_not_in_argv() -> None:
    cmd = status_cmd("/run/php-fpm-moodle-status.sock")
    assert cmd.argv == ("cgi-fcgi", "-bind", "-connect", "/run/php-fpm-moodle-status.sock")
    assert cmd.env["QUERY_STRING"] == "json&full" and cmd.env["SCRIPT_NAME"] == "/fpm-status"
    assert cmd.timeout


@pytest.mark.parametrize(("answer", "why"), [
    ("Status: 404 Not Found\r\nContent-type: text/html\r\n\r\nFile not found.", "404"),
    ("Content-Type: application/json\r\n\r\n{\"pool\":\"moodle\"}", "no processes"),
    ("Content-Type: application/json\r\n\r\n{\"pool\":", "not JSON"),
    ("", "no status page"),
])
def test_an_answer_that_is_not_the_full_status_is_refused(answer: str, why: str) -> None:
    with pytest.raises(StatusUnreadable, match=why):
        parse_status(answer)


def test_begun_before_the_freeze_means_running_at_least_as_long_as_the_freeze() -> None:
    busy = [Busy(1, 5.0, "a.php"), Busy(2, 1.99, "b.php"), Busy(3, 0.3, "c.php")]
    assert [b.pid for b in begun_before(busy, 2.0)] == [1, 2]  # 2: within the margin
    assert begun_before(busy, 6.0) == []
