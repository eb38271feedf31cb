"""The test bed's testinfra channel, with a local python3 in place of ``docker exec -i``."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "testbed"))

import testinfra_channel  # noqa: E402
from testinfra_channel import Channel, ChannelError, Pool  # noqa: E402

LOCAL = (sys.executable, "-c")


@pytest.fixture
def pool() -> Iterator[Pool]:
    pool = Pool()
    yield pool
    pool.close()


def test_status_stdout_and_stderr_come_back_apart(pool: Pool) -> None:
    assert pool.run(LOCAL, b"echo out; echo err >&2; exit 3") == (3, b"out\n", b"err\n")


def test_bytes_that_are_not_text_and_large_output_pass_unchanged(pool: Pool) -> None:
    status, out, _ = pool.run(LOCAL, b"printf '\\377\\000caf\\303\\251'; head -c 300000 /dev/zero")
    assert status == 0
    assert out[:7] == b"\xff\x00caf\xc3\xa9" and len(out) == 7 + 300000


def test_a_command_killed_by_a_signal_has_status_128_plus_its_number(pool: Pool) -> None:
    assert pool.run(LOCAL, b"kill -9 $$")[0] == 137


def test_a_command_has_no_standard_input(pool: Pool) -> None:
    assert pool.run(LOCAL, b"cat; echo done") == (0, b"done\n", b"")


def test_a_background_process_holding_the_output_does_not_hold_the_result(pool: Pool) -> None:
    status, out, _ = pool.run(LOCAL, b"sleep 30 & echo $!")
    assert status == 0
    background = int(out)
    try:
        os.kill(background, 0)  # the result came back while it still held the output
    finally:
        os.kill(background, signal.SIGTERM)


def test_commands_share_one_server(pool: Pool) -> None:
    first = pool.run(LOCAL, b"echo $PPID")[1]
    assert pool.run(LOCAL, b"echo $PPID")[1] == first


def test_a_server_that_went_away_is_replaced_for_the_next_command(pool: Pool) -> None:
    server = pool.run(LOCAL, b"echo $PPID")[1].strip()
    pool.run(LOCAL, b"(sleep 0.2; kill " + server + b") >/dev/null 2>&1 &")
    time.sleep(1)
    status, out, _ = pool.run(LOCAL, b"echo $PPID")
    assert status == 0 and out.strip() != server


def test_a_server_dying_during_a_command_fails_that_command(pool: Pool) -> None:
    with pytest.raises(ChannelError, match="closed during a command"):
        pool.run(LOCAL, b"kill -9 $PPID; sleep 5")
    assert pool.run(LOCAL, b"echo again") == (0, b"again\n", b"")


def test_two_threads_run_side_by_side_on_two_servers(pool: Pool, tmp_path: Path) -> None:
    results: list[tuple[int, bytes, bytes]] = []

    def work(mine: str, other: str) -> None:
        # Each command waits (10 s at most) for the other to have started: both succeed
        # only if they run at the same time.
        results.append(pool.run(LOCAL, (
            f"touch {tmp_path}/{mine}; for i in $(seq 200); do [ -e {tmp_path}/{other} ] && "
            f"{{ echo $PPID; exit 0; }}; sleep 0.05; done; exit 1").encode()))

    threads = [threading.Thread(target=work, args=pair) for pair in (("a", "b"), ("b", "a"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [status for status, _, _ in results] == [0, 0], results
    assert len({out for _, out, _ in results}) == 2  # two servers


def test_a_channel_that_cannot_start_says_so() -> None:
    with pytest.raises(ChannelError, match="no server"):
        Channel((sys.executable, "-c", "import sys; sys.stderr.write('nope'); sys.exit(1)", "-"))


def test_install_sends_testinfra_docker_commands_through_the_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from testinfra.backend import docker  # type: ignore[import-untyped]

    monkeypatch.setattr(docker.DockerBackend, "run", docker.DockerBackend.run)
    sent: list[tuple[list[str], bytes]] = []

    def fake_run(argv: list[str], command: bytes) -> tuple[int, bytes, bytes]:
        sent.append((list(argv), command))
        return 1, b"out", b"err"

    monkeypatch.setattr(testinfra_channel.POOL, "run", fake_run)
    testinfra_channel.install()
    result = docker.DockerBackend("web@app").run("ls %s", "a b")
    assert sent == [(["docker", "exec", "-i", "-u", "web", "app", "python3", "-c"], b"ls 'a b'")]
    assert (result.rc, result.stdout, result.stderr) == (1, "out", "err")
