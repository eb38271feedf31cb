"""ltihub-logproxy: the learning-log proxy (our counterpart of upstream's ltictr_proxy).

Run it in front of configurable-http-proxy::

    python -m ltihub.logproxy --config /etc/ltihub/logproxy.toml

The configuration file is TOML, every key optional (defaults below). It holds no
secret: each Moodle web-service token arrives with the LTI launch (``lms_rpctoken``)
and is kept in memory (and, with ``state_file``, in a mode 0600 file). The TLS key
file, when the proxy ends TLS, should be readable by the service alone.

    listen_host = "0.0.0.0"          # where browsers connect
    listen_port = 443
    tls_cert = ""                    # PEM certificate (+ chain); empty = plain HTTP
    tls_key = ""                     # its private key
    upstream_url = "http://127.0.0.1:8000"   # configurable-http-proxy
    hub_base_url = "/"               # JupyterHub's base_url
    username_key = "ext_user_username"       # LTI11Authenticator.username_key
    login_cookie = "jupyterhub-hub-login"    # proves the hub accepted a launch
    x_forwarded = true               # set X-Forwarded-For/-Proto/-Host (we are the edge)
    record = true                    # false: plain proxy, nothing recorded or sent
    moodle_allowed_urls = []         # e.g. ["https://moodle.example.edu"]; empty = any
    moodle_verify_tls = true
    moodle_ca_file = ""              # CA bundle for a self-signed / internal-CA Moodle
    queue_size = 10000               # records waiting for Moodle at most
    workers = 2                      # parallel posts (one session's records stay in order)
    max_attempts = 5                 # per record, then dropped (and counted)
    backoff_initial = 1.0            # seconds, doubled per attempt, with jitter
    backoff_max = 60.0
    post_timeout = 10.0              # seconds per post to Moodle
    state_file = ""                  # keep launch bindings across restarts (0600)
    launch_ttl = 43200               # seconds a binding lives unused
    max_ws_message = 0               # bytes per websocket message; 0 = no limit
    log_level = "INFO"
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import ssl
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = "/etc/ltihub/logproxy.toml"
CONFIG_ENV = "LTIHUB_LOGPROXY_CONFIG"

log = logging.getLogger("ltihub.logproxy")


class ConfigError(ValueError):
    """A configuration file or value the proxy cannot run with."""


@dataclass
class Config:
    listen_host: str = "0.0.0.0"  # noqa: S104 - the proxy is the hub's public entry
    listen_port: int = 443
    tls_cert: str = ""
    tls_key: str = ""
    upstream_url: str = "http://127.0.0.1:8000"
    hub_base_url: str = "/"
    username_key: str = "ext_user_username"
    login_cookie: str = "jupyterhub-hub-login"
    x_forwarded: bool = True
    record: bool = True
    moodle_allowed_urls: tuple[str, ...] = ()
    moodle_verify_tls: bool = True
    moodle_ca_file: str = ""
    queue_size: int = 10_000
    workers: int = 2
    max_attempts: int = 5
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    post_timeout: float = 10.0
    state_file: str = ""
    launch_ttl: float = 43_200.0
    max_ws_message: int = 0
    log_level: str = "INFO"


_TYPES: dict[str, type] = {f.name: type(f.default) for f in fields(Config)}


def _coerce(name: str, value: Any) -> Any:
    kind = _TYPES[name]
    if kind is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name}: a list of strings expected")
        return tuple(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, bool):
        raise ConfigError(f"{name}: an integer expected")
    if not isinstance(value, kind):
        raise ConfigError(f"{name}: {kind.__name__} expected, got {type(value).__name__}")
    return value


def config_from_mapping(data: dict[str, Any]) -> Config:
    unknown = sorted(set(data) - set(_TYPES))
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
    if "rpc_token" in data or "wstoken" in data:  # pragma: no cover - caught as unknown
        raise ConfigError("tokens come from the LTI launch, not from the configuration")
    config = Config(**{name: _coerce(name, value) for name, value in data.items()})
    validate(config)
    return config


def validate(config: Config) -> None:
    if not config.upstream_url.startswith(("http://", "https://")):
        raise ConfigError("upstream_url: an http:// or https:// URL expected")
    if bool(config.tls_cert) != bool(config.tls_key):
        raise ConfigError("tls_cert and tls_key go together")
    if not 0 < config.listen_port < 65536:
        raise ConfigError("listen_port: 1-65535")
    for name in ("queue_size", "workers", "max_attempts"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name}: at least 1")
    for name in ("backoff_initial", "backoff_max", "post_timeout", "launch_ttl"):
        if getattr(config, name) <= 0:
            raise ConfigError(f"{name}: must be positive")
    if config.max_ws_message < 0:
        raise ConfigError("max_ws_message: 0 (no limit) or more")
    for url in config.moodle_allowed_urls:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"moodle_allowed_urls: {url!r} is not an http(s) URL")
    if logging.getLevelName(config.log_level.upper()) not in range(0, 60):
        raise ConfigError("log_level: DEBUG, INFO, WARNING or ERROR")


def load_config(path: Path | None) -> Config:
    """Read the TOML file (a missing default file means all defaults)."""
    if path is None:
        default = Path(os.environ.get(CONFIG_ENV, DEFAULT_CONFIG))
        if not default.exists():
            return Config()
        path = default
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return config_from_mapping(data)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ltihub-logproxy",
        description="Learning-log proxy in front of configurable-http-proxy: relays all "
        "traffic and reports notebook cell executions to Moodle (mod_lticontainer).",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help=f"TOML configuration (default: ${CONFIG_ENV} or {DEFAULT_CONFIG} if it exists)",
    )
    parser.add_argument("--listen-host", help="overrides listen_host")
    parser.add_argument("--listen-port", type=int, help="overrides listen_port")
    parser.add_argument("--upstream-url", help="overrides upstream_url")
    parser.add_argument("--log-level", help="overrides log_level")
    parser.add_argument(
        "--check-config", action="store_true", help="validate the configuration and exit"
    )
    return parser


def build_proxy(config: Config) -> Any:
    """The :class:`LogProxy` for ``config`` (imports aiohttp only here)."""
    from .logproxy_proxy import LogProxy, ProxySettings
    from .logproxy_records import LaunchRegistry
    from .logproxy_sink import MoodleSink, SinkSettings

    registry = LaunchRegistry(
        ttl=config.launch_ttl,
        state_file=Path(config.state_file) if config.state_file else None,
    )
    sink = None
    if config.record:
        sink = MoodleSink(
            SinkSettings(
                queue_size=config.queue_size,
                workers=config.workers,
                max_attempts=config.max_attempts,
                backoff_initial=config.backoff_initial,
                backoff_max=config.backoff_max,
                timeout=config.post_timeout,
                verify_tls=config.moodle_verify_tls,
                ca_file=config.moodle_ca_file or None,
            )
        )
    settings = ProxySettings(
        upstream_url=config.upstream_url,
        hub_base_url=config.hub_base_url,
        username_key=config.username_key,
        login_cookie=config.login_cookie,
        x_forwarded=config.x_forwarded,
        record=config.record,
        allowed_moodle_urls=config.moodle_allowed_urls,
        max_ws_message=config.max_ws_message,
    )
    return LogProxy(settings, registry, sink)


async def serve(config: Config) -> None:
    from aiohttp import web

    proxy = build_proxy(config)
    ssl_context = None
    if config.tls_cert:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(config.tls_cert, config.tls_key)
    runner = web.AppRunner(
        proxy.app,
        access_log=None,
        auto_decompress=False,
        max_line_size=16384,
        max_field_size=16384,
    )
    await runner.setup()
    site = web.TCPSite(runner, config.listen_host, config.listen_port, ssl_context=ssl_context)
    await site.start()
    log.info(
        "learning-log proxy on %s:%d -> %s (recording %s)",
        config.listen_host,
        config.listen_port,
        config.upstream_url,
        "on" if config.record else "off",
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("stopping")
    await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        config = load_config(args.config)
        overrides = {
            "listen_host": args.listen_host,
            "listen_port": args.listen_port,
            "upstream_url": args.upstream_url,
            "log_level": args.log_level,
        }
        for name, value in overrides.items():
            if value is not None:
                setattr(config, name, value)
        validate(config)
    except ConfigError as exc:
        print(f"ltihub-logproxy: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        print("configuration ok")
        return 0
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # aiohttp's client logs nothing with URLs at INFO; keep its access log off anyway.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
