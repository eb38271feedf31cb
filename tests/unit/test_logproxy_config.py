"""The proxy's configuration file and command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from ltihub.logproxy import Config, ConfigError, load_config, main


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "logproxy.toml"
    path.write_text(text)
    return path


def test_file_values_and_defaults(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            'listen_port = 8443\nmoodle_allowed_urls = ["https://m"]\nbackoff_initial = 2\n',
        )
    )
    assert config.listen_port == 8443
    assert config.moodle_allowed_urls == ("https://m",)
    assert config.backoff_initial == 2.0
    assert config.moodle_verify_tls is True
    assert config.upstream_url == Config().upstream_url


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('wstoken = "abc"\n', "unknown setting"),
        ('listen_port = "443"\n', "int expected"),
        ('tls_cert = "/c.pem"\n', "go together"),
        ('upstream_url = "127.0.0.1:8000"\n', "upstream_url"),
        ("workers = 0\n", "at least 1"),
        ("record = 1\n", "bool expected"),
        ("listen_port = [\n", "logproxy.toml"),
    ],
)
def test_bad_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_missing_default_file_means_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LTIHUB_LOGPROXY_CONFIG", str(tmp_path / "absent.toml"))
    assert load_config(None) == Config()


def test_check_config_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, "listen_port = 8443\n")
    assert main(["--config", str(good), "--check-config", "--upstream-url", "http://h:1"]) == 0
    assert main(["--config", str(good), "--check-config", "--upstream-url", "h:1"]) == 2
    assert "upstream_url" in capsys.readouterr().err
