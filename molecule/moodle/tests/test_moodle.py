"""What an operator checks on the Moodle host after site.yml.

Runs in the scenario `moodle` (alone, to work on the Moodle host) and, in CI, in
`moodle_ops` (its verifier lists this file; it sorts before moodle_ops's own tests, so it
sees the freshly converged site, and test_upgrade_in_place.py runs it again after the
in-place upgrades). The hosts come from molecule's inventory: the Moodle host is the first
of the group `moodle` (its own front proxy: the public name); "another host" is one in
neither `moodle` nor `moodle_proxy` (mdl-hub1 in `moodle`, ops-backup1 in `moodle_ops`),
used to look at the Moodle host from outside. Works with the test stand-in
(tests/moodle_standin) and with a real Moodle archive (MJP_MOODLE_ARCHIVE).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import time
from pathlib import Path

import pytest
from testinfra.utils.ansible_runner import AnsibleRunner

_INVENTORY = AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"])
MOODLE_HOST = _INVENTORY.get_hosts("moodle")[0]
OTHER_HOST = sorted(
    set(_INVENTORY.get_hosts("all"))
    - set(_INVENTORY.get_hosts("moodle"))
    - set(_INVENTORY.get_hosts("moodle_proxy"))
)[0]

testinfra_hosts = [f"ansible://{MOODLE_HOST}"]

PUBLIC = f"https://{MOODLE_HOST}"
WEB_USER = "www-data"
# Every extension Moodle requires (shared/reference/moodle-facts.md) plus the optional ones
# the php role installs and the MariaDB driver.
EXTENSIONS = [
    "iconv", "mbstring", "curl", "openssl", "ctype", "zip", "zlib", "gd", "simplexml", "spl",
    "pcre", "dom", "xml", "xmlreader", "intl", "json", "hash", "fileinfo", "sodium", "filter",
    "soap", "exif", "tokenizer", "zend opcache", "mysqli",
]

# A minimal FastCGI client: asks the Moodle PHP-FPM pool (over its socket) to run a PHP
# file, the way Apache does, and prints what PHP printed.
FCGI_CLIENT = r"""
import socket, struct, sys
def rec(t, rid, body):
    return struct.pack('!BBHHBx', 1, t, rid, len(body), 0) + body
def nv(k, v):
    k, v = k.encode(), v.encode()
    return bytes([len(k)]) + bytes([len(v)]) + k + v
sock, script = sys.argv[1], sys.argv[2]
params = b''.join(nv(k, v) for k, v in {
    'SCRIPT_FILENAME': script, 'REQUEST_METHOD': 'GET', 'SCRIPT_NAME': '/probe.php',
    'REQUEST_URI': '/probe.php', 'QUERY_STRING': '', 'SERVER_PROTOCOL': 'HTTP/1.1',
    'GATEWAY_INTERFACE': 'CGI/1.1', 'SERVER_NAME': 'probe', 'SERVER_PORT': '80',
    'REMOTE_ADDR': '127.0.0.1'}.items())
s = socket.socket(socket.AF_UNIX); s.connect(sock)
begin = rec(1, 1, struct.pack('!HB5x', 1, 0))
s.sendall(begin + rec(4, 1, params) + rec(4, 1, b'') + rec(5, 1, b''))
out = b''
while True:
    head = s.recv(8, socket.MSG_WAITALL)
    if len(head) < 8: break
    _, t, _, n, pad = struct.unpack('!BBHHBx', head)
    body = s.recv(n + pad, socket.MSG_WAITALL)[:n] if n + pad else b''
    if t == 6: out += body
    if t == 3: break
sys.stdout.write(out.decode().split('\r\n\r\n', 1)[-1])
"""

PROBE_PHP = (
    "<?php echo json_encode(['sapi' => PHP_SAPI, 'max_input_vars' => ini_get('max_input_vars'),"
    " 'memory_limit' => ini_get('memory_limit'), 'opcache' => ini_get('opcache.enable'),"
    " 'extensions' => get_loaded_extensions()]);"
)


def _other(host):
    """A host on the same network that is neither the Moodle host nor a front proxy."""
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    return host.get_host(f"ansible://{OTHER_HOST}?ansible_inventory={inventory}")


def _fact(host):
    return json.loads(host.file("/etc/ansible/facts.d/moodle.fact").content_string)


def _active(host):
    fact = _fact(host)
    return fact["colours"][fact["active_colour"]]


def _dirroot(host):
    colour = _active(host)
    return colour["release_dir"] + ("/public" if colour["public_layout"] else "")


def _admin_password() -> str:
    secrets = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent / "secrets"
    path = secrets / "moodle-admin-password"
    assert oct(path.stat().st_mode & 0o777) == "0o600", "the generated password file is not 0600"
    return path.read_text().split()[0]


def _curl(host, args: str):
    return host.run(f"curl -sk --max-time 20 {args}")


def _db(host, sql: str) -> str:
    result = host.run(f"mariadb -N -B -e {shlex.quote(sql)}")
    assert result.rc == 0, result.stderr
    return result.stdout.strip()


def _standin(body: str) -> bool:
    return 'content="moodle-standin"' in body


def test_front_page_from_another_host_shows_site_and_release(host):
    probe = (
        "import ssl, urllib.request; ctx = ssl._create_unverified_context(); "
        f"r = urllib.request.urlopen('{PUBLIC}/', context=ctx, timeout=20); "
        "print(r.status); print(r.read().decode())"
    )
    result = _other(host).run(f"python3 -c {shlex.quote(probe)}")
    assert result.rc == 0, result.stderr
    status, body = result.stdout.split("\n", 1)
    assert status == "200"
    fullname = host.ansible.get_variables()["moodle_site_fullname"]
    assert fullname in body
    if _standin(body):
        version_php = host.file(_dirroot(host) + "/version.php").content_string
        release = re.search(r"\$release\s*=\s*'([^']*)'", version_php)
        assert release
        assert f"Moodle {release.group(1)}" in body


def test_http_redirects_to_https(host):
    result = _curl(host, "-o /dev/null -w '%{http_code} %{redirect_url}' "
                   f"http://{MOODLE_HOST}/login/index.php?x=1")
    assert result.stdout == f"301 {PUBLIC}/login/index.php?x=1"


def test_security_headers_and_tls(host):
    headers = _curl(host, f"-D - -o /dev/null {PUBLIC}/").stdout.lower()
    assert "x-content-type-options: nosniff" in headers
    assert "referrer-policy: strict-origin-when-cross-origin" in headers
    assert "x-frame-options: sameorigin" in headers
    conf = host.file("/etc/nginx/conf.d/moodle.conf").content_string
    assert re.search(r"client_max_body_size \d+[mg];", conf)
    assert host.file("/etc/nginx/tls/moodle.key").mode == 0o600


def test_upstream_is_one_file_pointing_at_active_colour(host):
    upstream = host.file("/etc/nginx/conf.d/moodle-upstream.conf").content_string
    port = _fact(host)["active_backend_port"]
    assert re.search(rf"server 127\.0\.0\.1:{port};", upstream)
    site = host.file("/etc/nginx/conf.d/moodle.conf").content_string
    assert "proxy_pass http://moodle_backend;" in site
    assert not re.search(r"^\s*upstream ", site, re.M), "the upstream must live in its own file"
    assert host.run("nginx -t").rc == 0


def _connect_from(remote, target: str, port: int) -> int:
    probe = (
        "import socket, sys\n"
        "try:\n"
        f"    socket.create_connection(('{target}', {port}), timeout=4).close()\n"
        "except OSError:\n"
        "    sys.exit(3)\n"
    )
    return int(remote.run(f"python3 -c {shlex.quote(probe)}").rc)


def test_backend_port_closed_from_another_host(host):
    other = _other(host)
    port = _fact(host)["active_backend_port"]
    assert _connect_from(other, MOODLE_HOST, 443) == 0, f"{OTHER_HOST} cannot reach the proxy"
    assert _connect_from(other, MOODLE_HOST, port) == 3, (
        f"port {port} is reachable from {OTHER_HOST}"
    )


def test_backend_port_open_to_the_proxy(host):
    port = _fact(host)["active_backend_port"]
    result = _curl(host, f"-o /dev/null -w '%{{http_code}}' -H 'Host: {MOODLE_HOST}' "
                   f"http://127.0.0.1:{port}/")
    assert result.stdout in {"200", "303"}, result.stdout
    nft = host.run("nft list table inet mjp_firewall")
    assert nft.rc == 0
    assert "policy drop" in nft.stdout


def _login(host, password: str) -> str:
    jar = "/tmp/mjp-test-cookies"
    host.run(f"rm -f {jar}")
    form = _curl(host, f"-c {jar} -b {jar} {PUBLIC}/login/index.php").stdout
    token = re.search(r'name="logintoken" value="([^"]+)"', form)
    assert token, "no logintoken in the login form"
    user = host.ansible.get_variables().get("moodle_admin_user", "admin")
    posted = _curl(
        host,
        f"-c {jar} -b {jar} -o /dev/null -w '%{{http_code}}' "
        f"--data-urlencode {shlex.quote('username=' + user)} "
        f"--data-urlencode {shlex.quote('password=' + password)} "
        f"--data-urlencode {shlex.quote('logintoken=' + token.group(1))} {PUBLIC}/login/index.php",
    ).stdout
    assert posted in {"200", "303"}
    return str(_curl(host, f"-L -c {jar} -b {jar} {PUBLIC}/").stdout)


def test_admin_login_with_generated_password(host):
    user = host.ansible.get_variables().get("moodle_admin_user", "admin")
    page = _login(host, _admin_password())
    assert re.search(rf"You are logged in as .*{re.escape(user)}", page, re.S | re.I), page[-600:]


def test_admin_login_with_wrong_password_fails(host):
    page = _login(host, "not-the-password-42")
    assert "You are logged in as" not in page


def test_php_cli_settings(host):
    out = host.run(f"php -r {shlex.quote(PROBE_PHP[6:])}")
    assert out.rc == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["sapi"] == "cli"
    assert report["max_input_vars"] == "5000"
    loaded = {name.lower() for name in report["extensions"]}
    assert not set(EXTENSIONS) - loaded


def test_php_fpm_settings(host):
    probe = "/tmp/mjp-fpm-probe.php"
    host.run(f"printf '%s' {shlex.quote(PROBE_PHP)} > {probe} && chmod 0644 {probe}")
    try:
        out = host.run(
            f"python3 -c {shlex.quote(FCGI_CLIENT)} /run/php-fpm-moodle.sock {probe}"
        )
    finally:
        host.run(f"rm -f {probe}")
    assert out.rc == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["sapi"] == "fpm-fcgi"
    assert report["max_input_vars"] == "5000"
    assert report["opcache"] == "1"
    loaded = {name.lower() for name in report["extensions"]}
    assert not set(EXTENSIONS) - loaded


STATUS_SOCKET = "/run/php-fpm-moodle-status.sock"
STATUS_ENV = ("SCRIPT_NAME=/fpm-status SCRIPT_FILENAME=/fpm-status REQUEST_METHOD=GET "
              "QUERY_STRING=json")
STATUS_READ = f"env {STATUS_ENV} cgi-fcgi -bind -connect {STATUS_SOCKET}"


def test_fpm_status_page_answers_on_its_own_socket_only(host):
    """The blue-green freeze reads it; it lists running requests' URIs with their query
    strings, so neither the proxy nor a backend port may hand it out."""
    sock = host.file(STATUS_SOCKET)
    assert sock.is_socket and sock.mode == 0o660 and sock.user == WEB_USER
    page = host.run(STATUS_READ)
    assert page.rc == 0 and '"pool":"moodle"' in page.stdout, page.stdout + page.stderr
    other = host.run(f"runuser -u nobody -- {STATUS_READ}")
    assert '"pool"' not in other.stdout
    port = _fact(host)["active_backend_port"]
    for url in (f"{PUBLIC}/fpm-status?json", f"{PUBLIC}/fpm-status.php?json",
                f"http://127.0.0.1:{port}/fpm-status?json", f"{PUBLIC}/index.php/fpm-status?json"):
        answer = _curl(host, url)
        assert '"pool"' not in answer.stdout and "accepted conn" not in answer.stdout, url


def test_moodledata_owner_mode_and_outside_web_root(host):
    colour = _active(host)
    data = host.file(colour["dataroot"])
    assert data.user == WEB_USER
    assert data.group == WEB_USER
    assert data.mode == 0o2770
    assert not colour["dataroot"].startswith(colour["release_dir"])
    assert host.file(colour["dataroot"] + "/sessions").exists, "no web session was ever stored"


def test_config_php_not_world_readable(host):
    config = host.file(_active(host)["release_dir"] + "/config.php")
    assert config.user == "root"
    assert config.group == WEB_USER
    assert config.mode & 0o007 == 0
    text = config.content_string
    assert f"$CFG->wwwroot   = '{PUBLIC}';" in text
    assert "$CFG->sslproxy  = true;" in text
    served = _curl(host, f"{PUBLIC}/config.php").stdout
    assert "dbpass" not in served


def test_code_is_not_writable_by_the_web_server(host):
    release = host.file(_active(host)["release_dir"])
    assert release.user == "root"
    assert release.mode & 0o022 == 0


def test_database_user_has_no_global_privileges(host):
    grants = _db(host, "SHOW GRANTS FOR 'moodle'@'localhost'").splitlines()
    db_name = _active(host)["db_name"]
    global_grants = [g for g in grants if " ON *.* " in g]
    assert global_grants and all(g.startswith("GRANT USAGE ON *.*") for g in global_grants), grants
    assert any(f"ON `{db_name}`.*" in g for g in grants), grants
    charset = _db(
        host,
        "SELECT default_character_set_name FROM information_schema.schemata "
        f"WHERE schema_name = '{db_name}'",
    )
    assert charset == "utf8mb4"


def test_database_in_step_with_the_code(host):
    colour = _active(host)
    version = _db(host, f"SELECT value FROM {colour['db_name']}.mdl_config WHERE name = 'version'")
    assert float(version) == float(colour["code_version"])
    pending = host.run(
        f"runuser -u {WEB_USER} -- php {_dirroot(host)}/admin/cli/upgrade.php --is-pending"
    )
    assert pending.rc == 0, pending.stdout + pending.stderr


def test_lticontainer_plugin_installed(host):
    real_moodle = os.environ.get("MJP_MOODLE_ARCHIVE")
    if real_moodle and not os.environ.get("MJP_LTICONTAINER_ARCHIVE"):
        pytest.skip("a real Moodle without a real mod_lticontainer archive: no add-on plugin")
    folder = host.file(_dirroot(host) + "/mod/lticontainer/version.php")
    assert folder.exists
    db_name = _active(host)["db_name"]
    version = _db(
        host,
        f"SELECT value FROM {db_name}.mdl_config_plugins "
        "WHERE plugin = 'mod_lticontainer' AND name = 'version'",
    )
    assert re.search(r"\$plugin->version\s*=\s*" + re.escape(version), folder.content_string)


def test_cron_timer_active_and_has_run(host):
    colour = _fact(host)["active_colour"]
    timer = host.service(f"moodle-cron-{colour}.timer")
    assert timer.is_enabled
    assert timer.is_running
    db_name = _active(host)["db_name"]
    lastcron = ""
    for _ in range(30):
        # config lastcron (the stand-in, older Moodle); tool_task lastcronstart (Moodle 4.x).
        lastcron = _db(
            host,
            f"SELECT MAX(CAST(value AS UNSIGNED)) FROM (SELECT value FROM {db_name}.mdl_config "
            f"WHERE name = 'lastcron' UNION ALL SELECT value FROM {db_name}.mdl_config_plugins "
            "WHERE plugin = 'tool_task' AND name = 'lastcronstart') AS runs",
        )
        if lastcron == "NULL":
            lastcron = ""
        if lastcron:
            break
        time.sleep(5)
    assert lastcron, "cron never ran"
    assert time.time() - int(lastcron) < 300
    unit = host.file(f"/etc/systemd/system/moodle-cron-{colour}.service").content_string
    assert f"User={WEB_USER}" in unit
    assert "admin/cli/cron.php" in unit


def test_active_colour_recorded(host):
    fact = _fact(host)
    active = fact["active_colour"]
    if "last_switch" not in fact:  # never switched (blue-green): the first deployment's colour
        assert active == "blue"
    assert fact["colours"][active]["backend_port"] == fact["active_backend_port"]
    assert host.file(f"/srv/moodle/{active}").linked_to == fact["colours"][active]["release_dir"]


def _secret(name: str) -> str:
    path = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent / "secrets" / name
    return path.read_text().split()[0]


def test_config_php_readable_by_the_web_user_only_and_prevents_exec_paths(host):
    for colour in _fact(host)["colours"].values():
        path = colour["release_dir"] + "/config.php"
        config = host.file(path)
        assert config.user == "root"
        assert config.group == WEB_USER
        assert config.mode == 0o640
        assert re.search(r"^\$CFG->preventexecpath = true;$", config.content_string, re.M)
        assert host.run(f"runuser -u {WEB_USER} -- test -r {shlex.quote(path)}").rc == 0
        assert host.run(f"runuser -u nobody -- test -r {shlex.quote(path)}").rc != 0
    # As Moodle itself sees it (config.php bootstraps Moodle, as the CLI scripts do).
    probe = (
        "define('CLI_SCRIPT', true); require $argv[1]; "
        "echo json_encode($CFG->preventexecpath);"
    )
    config_php = _active(host)["release_dir"] + "/config.php"
    seen = host.run(
        f"runuser -u {WEB_USER} -- php -r {shlex.quote(probe)} {shlex.quote(config_php)}"
    )
    assert seen.rc == 0, seen.stdout + seen.stderr
    assert seen.stdout.strip().endswith("true")


def test_no_secret_in_any_process_arguments_during_the_install(host):
    # prepare.yml started molecule/moodle/files/argv_sampler.py before converge: it scanned
    # /proc/*/cmdline every 10 ms until converge.yml stopped it at the converge's end.
    record_file = host.file("/root/mjp-argv-sampler.json")
    assert record_file.exists, "the argv sampler started by prepare.yml left no record"
    record = json.loads(record_file.content_string)
    assert record["finished"], "the argv sampler was still running: its record may be cut short"
    assert record["install_seen"], "the sampler never saw install_database.php run"
    cmdlines = ["\0".join(args) for args in record["cmdlines"]]
    installs = [c for c in cmdlines if "admin/cli/install_database.php" in c]
    assert installs
    assert all("moodle_cli_stdin.php" in c and "--adminpass" not in c for c in installs), [
        c.replace("\0", " ") for c in installs
    ]
    for name in ("moodle-admin-password", "moodle-db-password"):
        secret = _secret(name)
        leaked = [c for c in cmdlines if secret in c]
        # Name the processes, never the secret.
        assert not leaked, f"{name} was in the arguments of: " + ", ".join(
            c.split("\0", 1)[0] for c in leaked
        )
