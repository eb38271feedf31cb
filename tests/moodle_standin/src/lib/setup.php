<?php
// TEST STAND-IN for Moodle's lib/setup.php -- NOT Moodle code.
// config.php (written by the deployment role) fills $CFG and ends with
//   require_once(__DIR__ . '/lib/setup.php');
// This file then checks the paths, connects to the real database, loads the config
// table and, for web requests, applies Moodle's maintenance / wwwroot / session rules.

global $CFG, $DB, $USER, $SESSION, $SITE;

if (!isset($CFG) || !is_object($CFG)) {
    exit(1); // Someone opened this file directly.
}
if (!defined('MOODLE_INTERNAL')) {
    define('MOODLE_INTERNAL', true);
}

// Values from config.php win over values stored in the config table.
$CFG->config_php_settings = array_filter((array)$CFG, static fn($v) => !is_object($v));

$CFG->dirroot = dirname(__DIR__);
// Moodle 5.1 layout: <root>/config.php and <root>/lib/setup.php (a shim) next to
// <root>/public/, which holds everything web-visible including this file.
if (basename($CFG->dirroot) === 'public' && is_file(dirname($CFG->dirroot) . '/lib/setup.php')) {
    $CFG->root = dirname($CFG->dirroot);
}

if (!isset($CFG->directorypermissions)) {
    $CFG->directorypermissions = 02777;
}
$CFG->filepermissions = $CFG->directorypermissions & 0666;
$CFG->umaskpermissions = ($CFG->directorypermissions & 0777) ^ 0777;
umask($CFG->umaskpermissions);

if (!defined('CLI_SCRIPT')) {
    define('CLI_SCRIPT', false);
}

// Path checks with Moodle's own messages.
$standinfatal = static function (string $message): void {
    if (isset($_SERVER['REMOTE_ADDR'])) {
        header(($_SERVER['SERVER_PROTOCOL'] ?? 'HTTP/1.1') . ' 500 Internal Server Error');
    }
    echo $message . "\n";
    exit(1);
};
if (!isset($CFG->dataroot)) {
    $standinfatal('Fatal error: $CFG->dataroot is not specified in config.php! Exiting.');
}
$CFG->dataroot = realpath($CFG->dataroot);
if ($CFG->dataroot === false) {
    $standinfatal('Fatal error: $CFG->dataroot is not configured properly, directory does not exist or is not accessible! Exiting.');
} else if (!is_writable($CFG->dataroot)) {
    $standinfatal('Fatal error: $CFG->dataroot is not writable, admin has to fix directory permissions! Exiting.');
}
if (!isset($CFG->wwwroot) || $CFG->wwwroot === 'http://example.com/moodle') {
    $standinfatal('Fatal error: $CFG->wwwroot is not configured! Exiting.');
}
unset($standinfatal);

$CFG->prefix = $CFG->prefix ?? '';
$CFG->admin = $CFG->admin ?? 'admin';
$CFG->libdir = $CFG->dirroot . '/lib';
$CFG->tempdir = $CFG->tempdir ?? $CFG->dataroot . '/temp';
$CFG->cachedir = $CFG->cachedir ?? $CFG->dataroot . '/cache';
$CFG->localcachedir = $CFG->localcachedir ?? $CFG->dataroot . '/localcache';
$CFG->localrequestdir = $CFG->localrequestdir ?? sys_get_temp_dir() . '/requestdir';
$CFG->filedir = $CFG->filedir ?? $CFG->dataroot . '/filedir';

// CLI and web scripts must not be mixed up (same checks and texts as Moodle).
if (isset($_SERVER['REMOTE_ADDR'])) {
    if (CLI_SCRIPT) {
        echo 'Command line scripts can not be executed from the web interface';
        exit(1);
    }
} else if (!CLI_SCRIPT) {
    echo "Command line scripts must define CLI_SCRIPT before requiring config.php\n";
    exit(1);
}
if (CLI_SCRIPT && isset($_SERVER['argv'][0])) {
    chdir(dirname($_SERVER['argv'][0]));
}

require_once($CFG->libdir . '/setuplib.php');
require_once($CFG->libdir . '/dmllib.php');
require_once($CFG->libdir . '/classes/session/manager.php');
require_once($CFG->libdir . '/accesslib.php');
// Moodle autoloads its classes; the stand-in maps core_<area>\<name> to
// lib/<area>/classes/<name>.php (\core_external\util -> lib/external/classes/util.php).
spl_autoload_register(static function (string $class): void {
    global $CFG;
    if (preg_match('/^core_([a-z]+)\\\\([a-z_\\\\]+)$/', $class, $m)) {
        $file = $CFG->libdir . '/' . $m[1] . '/classes/' . str_replace('\\', '/', $m[2]) . '.php';
        if (is_file($file)) {
            require_once($file);
        }
    }
});
set_exception_handler('standin_default_exception_handler');

// CLI maintenance mode: checked before the database is touched, like Moodle.
if (file_exists($CFG->dataroot . '/climaintenance.html')) {
    if (!CLI_SCRIPT) {
        header(($_SERVER['SERVER_PROTOCOL'] ?? 'HTTP/1.1') . ' 503 Moodle under maintenance');
        header('Status: 503 Moodle under maintenance');
        header('Retry-After: 300');
        header('Content-type: text/html; charset=utf-8');
        header('Cache-Control: no-store, no-cache, must-revalidate');
        header('Accept-Ranges: none');
        readfile($CFG->dataroot . '/climaintenance.html');
        die;
    }
    define('CLI_MAINTENANCE', true);
} else {
    define('CLI_MAINTENANCE', false);
}

$DB = standin_database::connect($CFG);
initialise_cfg();
\core\session\manager::init_empty_session();

if (!defined('SITEID')) {
    define('SITEID', 1);
}
$SITE = !empty($CFG->version) ? get_site() : false;

// --enablelater: switch to CLI maintenance once the time has come.
if (!empty($CFG->maintenance_later) && (int)$CFG->maintenance_later <= time()) {
    enable_cli_maintenance_mode();
    unset_config('maintenance_later');
    if (!CLI_SCRIPT) {
        redirect($CFG->wwwroot . '/');
    }
}

if (!CLI_SCRIPT) {
    standin_initialise_fullme();
    if (!empty($CFG->upgraderunning) && (int)$CFG->upgraderunning > time()) {
        standin_send_status(503, 'Service Unavailable');
        header('Retry-After: 60');
        standin_page('Upgrade', '<p>' . s(get_string('upgraderunning', 'error')) . '</p>', 'page-upgraderunning');
        exit(0);
    }
    if (!defined('NO_MOODLE_COOKIES') || !NO_MOODLE_COOKIES) {
        standin_start_session();
    }
}

/**
 * Moodle's initialise_fullme() rules: the request must reach the site through the host,
 * port and path of $CFG->wwwroot (unless $CFG->reverseproxy), and an https wwwroot behind
 * a TLS-terminating proxy needs $CFG->sslproxy.
 */
function standin_initialise_fullme(): void {
    global $CFG;
    $wwwroot = parse_url($CFG->wwwroot);
    $wscheme = $wwwroot['scheme'] ?? 'http';
    $scheme = (!empty($_SERVER['HTTPS']) && strtolower((string)$_SERVER['HTTPS']) !== 'off') ? 'https' : 'http';

    if (!empty($CFG->sslproxy)) {
        if ($wscheme !== 'https') {
            throw new moodle_exception('sslonlyaccess', 'error', '', null, 'Must use https address in wwwroot when ssl proxy enabled!');
        }
        $scheme = 'https';
        $_SERVER['HTTPS'] = 'on';
        $_SERVER['SERVER_PORT'] = 443;
    }

    $hostheader = (string)($_SERVER['HTTP_HOST'] ?? '');
    if (preg_match('/^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/', $hostheader, $m)) {
        $host = $m[1];
        $port = isset($m[2]) ? (int)$m[2] : ($scheme === 'https' ? 443 : 80);
    } else {
        $host = '';
        $port = 0;
    }
    $wport = (int)($wwwroot['port'] ?? ($wscheme === 'https' ? 443 : 80));
    $wpath = rtrim($wwwroot['path'] ?? '', '/');
    $path = (string)parse_url($_SERVER['REQUEST_URI'] ?? '/', PHP_URL_PATH);

    if (empty($CFG->reverseproxy)) {
        $wrong = strcasecmp($host, $wwwroot['host'] ?? '') !== 0 || $port !== $wport
            || ($wpath !== '' && !str_starts_with($path, $wpath . '/') && $path !== $wpath);
        if ($wrong) {
            redirect($CFG->wwwroot, get_string('wwwrootmismatch', 'error', $CFG->wwwroot));
        }
    }
    if ($wscheme === 'https' && $scheme === 'http') {
        redirect($CFG->wwwroot, get_string('wwwrootmismatch', 'error', $CFG->wwwroot));
    }
}

/**
 * File based PHP session in <dataroot>/sessions, cookie "MoodleSession<sessioncookie>".
 */
function standin_start_session(): void {
    global $CFG, $USER, $DB;
    $dir = make_writable_directory($CFG->dataroot . '/sessions');
    session_save_path($dir);
    session_name('MoodleSession' . ($CFG->sessioncookie ?? ''));
    $secure = str_starts_with($CFG->wwwroot, 'https:');
    $params = [
        'lifetime' => 0,
        'path' => rtrim((string)(parse_url($CFG->wwwroot, PHP_URL_PATH) ?? ''), '/') . '/',
        'secure' => $secure,
        'httponly' => true,
    ];
    if ($secure) {
        $params['samesite'] = 'None';
    }
    session_set_cookie_params($params);
    session_start();
    if (!empty($_SESSION['USERID']) && !empty($CFG->version)) {
        $user = $DB->get_record('user', ['id' => (int)$_SESSION['USERID'], 'deleted' => 0]);
        if ($user) {
            $USER = $user;
        }
    }
}
