<?php
// TEST STAND-IN helpers (config, strings, plugins, maintenance, web output) -- NOT Moodle code.
// Function names follow Moodle's where the toolkit might call them (get_config,
// set_config, moodle_needs_upgrading, purge_all_caches, get_admin ...).

defined('MOODLE_INTERNAL') || die();

const MATURITY_ALPHA = 50;
const MATURITY_BETA = 100;
const MATURITY_RC = 150;
const MATURITY_STABLE = 200;

// Web-service token types (Moodle defines them in lib/moodlelib.php).
const EXTERNAL_TOKEN_PERMANENT = 0;
const EXTERNAL_TOKEN_EMBEDDED = 1;
// Password value of accounts that cannot log in with a password (lib/authlib.php).
const AUTH_PASSWORD_NOT_CACHED = 'not cached';

/**
 * English strings used by the stand-in. The texts are Moodle's own wording (lang/en)
 * for every message a deployment script might match on.
 */
function standin_strings(): array {
    return [
        'admin' => [
            'cliincorrectvalueerror' => 'Error, incorrect value "{$a->value}" for "{$a->option}"',
            'cliincorrectvalueretry' => 'Incorrect value, please retry',
            'clistatusdisabled' => 'Status: disabled',
            'clistatusenabled' => 'Status: enabled',
            'clistatusenabledlater' => 'status: CLI maintenance mode will be enabled on {$a}',
            'cliunknowoption' => "Unrecognised options:\n  {\$a}\nPlease use --help option.",
            'cliupgradedefaultheading' => 'Setting new default values',
            'cliupgradefinished' => 'Command line upgrade from {$a->oldversion} to {$a->newversion} completed successfully.',
            'cliupgradenoneed' => 'No upgrade needed for the installed version {$a}. Thanks for coming anyway!',
            'cliupgradepending' => 'An upgrade is pending',
            'cliyesnoprompt' => 'type y (means yes) or n (means no)',
            'clianswerno' => 'n',
            'cliansweryes' => 'y',
            'maturity50' => 'Alpha',
            'maturity100' => 'Beta',
            'maturity150' => 'Release candidate',
            'maturity200' => 'Stable version',
            'maturityallowunstable' => 'Hint: You may want to run this script with --allow-unstable option',
            'maturitycorewarning' => "The version of Moodle that you are about to install or upgrade to contains\n"
                . "unstable \"{\$a}\" development code that is not suitable for use on most production\n"
                . "sites. If this is not what you wanted then you should make sure you are updating\n"
                . "from a STABLE branch of the Moodle code. See Moodle Docs for more details.",
            'pluginscheckfailed' => 'Dependencies check failed for {$a->pluginslist}',
            'pluginschecktodo' => 'You must solve all the plugin requirements before proceeding to install this Moodle version!',
            'sitemaintenance' => 'The site is undergoing maintenance and is currently not available',
            'sitemaintenancemode' => 'Maintenance mode',
            'sitemaintenanceoff' => 'Maintenance mode has been disabled and the site is running normally again',
            'sitemaintenanceon' => 'Your site is currently in maintenance mode (only admins can log in or use the site).',
            'sitemaintenanceoncli' => 'Your site is currently in CLI maintenance mode, no web access is allowed.',
            'sitemaintenancetitle' => '{$a} under maintenance',
            'upgradeerror' => 'Unknown error upgrading {$a->plugin} to version {$a->version}, can not continue.',
            'upgradesure' => "Your Moodle files have been changed, and you are about to automatically upgrade your server to this version:\n{\$a}\n"
                . "Once you do this you can not go back again.\nPlease note that this process can take a long time.\n"
                . "Are you sure you want to upgrade this server to this version?",
        ],
        'install' => [
            'cliinstallfinished' => 'Installation completed successfully.',
            'clitablesexist' => 'Database tables already present, cli installation can not continue.',
        ],
        'debug' => [
            'cannotdowngrade' => 'Cannot downgrade {$a->plugin} from {$a->oldversion} to {$a->newversion}.',
            'missingconfigversion' => 'Config table does not contain version, can not continue, sorry.',
            'codingerror' => 'Coding error detected, it must be fixed by a programmer: {$a}',
        ],
        'error' => [
            'dbconnectionfailed' => "<p>Error: Database connection failed</p>\n"
                . "<p>It is possible that the database is overloaded or otherwise not running properly.</p>\n"
                . "<p>The site administrator should also check that the database details have been correctly specified in config.php</p>",
            'detectedbrokenplugin' => 'The plugin {$a} is defective or outdated; sorry you cannot continue.',
            'dmlreadexception' => 'Error reading from database',
            'dmlwriteexception' => 'Error writing to database',
            'downgradedcore' => 'Error: The code you are using is older than the version recorded in the database.',
            'invalidrecord' => 'Can\'t find data record in database table {$a}.',
            'missingparameter' => 'Parameter missing',
            'multiplerecordsfound' => 'Multiple records found, only one record expected.',
            'upgraderunning' => 'Site is being upgraded, please retry later.',
            'wwwrootmismatch' => 'Incorrect access detected, this server may be accessed only through "{$a}" address, sorry. Please notify server administrator.',
            'sslonlyaccess' => 'For security reasons only https connections are allowed, sorry.',
        ],
        'role' => [
            'shortnametaken' => 'This short name is already used by another role ({$a})',
        ],
        'webservice' => [
            'accessexception' => 'Access control exception',
            'invalidtoken' => 'Invalid token - token not found',
            'invalidparameter' => 'Invalid parameter value detected',
            'servicenotavailable' => 'Web service is not available (it doesn\'t exist or might be disabled)',
            'usernotallowed' => 'The user is not allowed for this service. First you need to allow this user on the {$a}\'s allowed users administration page.',
        ],
        'moodle' => [
            'invalidlogin' => 'Invalid login, please try again',
            'loggedinas' => 'You are logged in as {$a}',
            'loggedinnot' => 'You are not logged in.',
            'login' => 'Log in',
            'logout' => 'Log out',
        ],
    ];
}

/**
 * Moodle's get_string(), limited to the strings above.
 */
function get_string(string $identifier, string $component = 'moodle', $a = null): string {
    $component = $component === '' || $component === 'core' ? 'moodle' : preg_replace('/^core_/', '', $component);
    $text = standin_strings()[$component][$identifier] ?? "[[$identifier]]";
    if ($a !== null) {
        if (is_object($a) || is_array($a)) {
            foreach ((array)$a as $k => $v) {
                $text = str_replace('{$a->' . $k . '}', (string)$v, $text);
            }
        } else {
            $text = str_replace('{$a}', (string)$a, $text);
        }
    }
    return $text;
}

function s($text): string {
    return htmlspecialchars((string)$text, ENT_QUOTES | ENT_HTML5, 'UTF-8');
}

/* ---------------------------------------------------------------- configuration */

/**
 * Loads the config table into $CFG. Like Moodle, values already set by config.php win.
 * Returns false while the database is not installed.
 */
function initialise_cfg(): bool {
    global $CFG, $DB;
    if (!$DB->get_manager()->table_exists('config')) {
        return false;
    }
    foreach ($DB->get_records('config', null, '', 'name, value') as $record) {
        if (!array_key_exists($record->name, $CFG->config_php_settings)) {
            $CFG->{$record->name} = $record->value;
        }
    }
    return true;
}

function get_config(?string $plugin = null, ?string $name = null) {
    global $CFG, $DB;
    if ($plugin === null || $plugin === 'core' || $plugin === 'moodle') {
        if ($name === null) {
            return $CFG;
        }
        $value = $DB->get_field('config', 'value', ['name' => $name]);
        return $value;
    }
    if ($name === null) {
        $result = new stdClass();
        foreach ($DB->get_records('config_plugins', ['plugin' => $plugin]) as $record) {
            $result->{$record->name} = $record->value;
        }
        return $result;
    }
    return $DB->get_field('config_plugins', 'value', ['plugin' => $plugin, 'name' => $name]);
}

function set_config(string $name, $value, ?string $plugin = null): bool {
    global $CFG, $DB;
    if ($plugin === null || $plugin === 'core' || $plugin === 'moodle') {
        if ($value === null) {
            return unset_config($name);
        }
        if ($DB->record_exists('config', ['name' => $name])) {
            $DB->set_field('config', 'value', (string)$value, ['name' => $name]);
        } else {
            $DB->insert_record('config', ['name' => $name, 'value' => (string)$value]);
        }
        if (!array_key_exists($name, $CFG->config_php_settings)) {
            $CFG->$name = (string)$value;
        }
        return true;
    }
    if ($value === null) {
        return unset_config($name, $plugin);
    }
    $conditions = ['plugin' => $plugin, 'name' => $name];
    if ($DB->record_exists('config_plugins', $conditions)) {
        $DB->set_field('config_plugins', 'value', (string)$value, $conditions);
    } else {
        $DB->insert_record('config_plugins', $conditions + ['value' => (string)$value]);
    }
    return true;
}

function unset_config(string $name, ?string $plugin = null): bool {
    global $CFG, $DB;
    if ($plugin === null || $plugin === 'core' || $plugin === 'moodle') {
        $DB->delete_records('config', ['name' => $name]);
        if (!array_key_exists($name, $CFG->config_php_settings)) {
            unset($CFG->$name);
        }
        return true;
    }
    $DB->delete_records('config_plugins', ['plugin' => $plugin, 'name' => $name]);
    return true;
}

/* -------------------------------------------------------------- versions, plugins */

/**
 * Reads version.php of the code base: ['version' => float, 'release', 'branch', 'maturity'].
 */
function standin_code_version(): array {
    global $CFG;
    $version = null;
    $release = null;
    $branch = null;
    $maturity = null;
    require($CFG->dirroot . '/version.php');
    return ['version' => (float)$version, 'release' => (string)$release, 'branch' => (string)$branch,
        'maturity' => $maturity];
}

/**
 * Activity modules found on disk: mod/<name>/version.php defines $plugin->version,
 * ->requires, ->component (must be mod_<name>), optional ->release and ->maturity.
 * A module folder without version.php aborts, as in Moodle.
 *
 * @return array component => plugin info object
 */
function standin_get_plugins(): array {
    global $CFG;
    $plugins = [];
    foreach (glob($CFG->dirroot . '/mod/*', GLOB_ONLYDIR) ?: [] as $dir) {
        $name = basename($dir);
        if (!preg_match('/^[a-z][a-z0-9_]*$/', $name)) {
            continue;
        }
        $component = 'mod_' . $name;
        if (!is_readable("$dir/version.php")) {
            throw new moodle_exception('detectedbrokenplugin', 'error', '', $component);
        }
        $plugin = new stdClass();
        $module = $plugin; // Very old plugins used $module.
        require("$dir/version.php");
        if (empty($plugin->version) || ($plugin->component ?? $component) !== $component) {
            throw new moodle_exception('detectedbrokenplugin', 'error', '', $component);
        }
        $plugin->name = $name;
        $plugin->dir = $dir;
        $plugin->component = $component;
        $plugins[$component] = $plugin;
    }
    ksort($plugins);
    return $plugins;
}

/**
 * Plugins whose $plugin->requires is newer than the given core version.
 */
function standin_failed_plugin_dependencies(float $coreversion): array {
    $failed = [];
    foreach (standin_get_plugins() as $component => $plugin) {
        if (!empty($plugin->requires) && (float)$plugin->requires > $coreversion) {
            $failed[] = $component;
        }
    }
    return $failed;
}

/**
 * True when the code on disk differs from what the database records: core newer,
 * or any plugin missing from config_plugins or with another version.
 */
function moodle_needs_upgrading(): bool {
    global $CFG, $DB;
    if (empty($CFG->version)) {
        return true;
    }
    $code = standin_code_version();
    if ($code['version'] > (float)$CFG->version) {
        return true;
    }
    foreach (standin_get_plugins() as $component => $plugin) {
        $installed = $DB->get_field('config_plugins', 'value', ['plugin' => $component, 'name' => 'version']);
        if ($installed === false || (float)$installed != (float)$plugin->version) {
            return true;
        }
    }
    return false;
}

/* ------------------------------------------------------------------ users, site */

function get_admin(): ?stdClass {
    global $CFG, $DB;
    $ids = array_filter(explode(',', (string)($CFG->siteadmins ?? '')));
    if (!$ids) {
        return null;
    }
    $admin = $DB->get_record('user', ['id' => (int)reset($ids)]);
    return $admin ?: null;
}

function is_siteadmin($user = null): bool {
    global $CFG, $USER;
    $id = is_object($user) ? ($user->id ?? 0) : ($user ?? ($USER->id ?? 0));
    return !empty($id) && in_array((string)$id, explode(',', (string)($CFG->siteadmins ?? '')), true);
}

function get_site() {
    global $DB;
    return $DB->get_record('course', ['id' => 1]);
}

function random_string(int $length = 15): string {
    $pool = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
    $out = '';
    for ($i = 0; $i < $length; $i++) {
        $out .= $pool[random_int(0, strlen($pool) - 1)];
    }
    return $out;
}

function validate_email(string $address): bool {
    return filter_var($address, FILTER_VALIDATE_EMAIL) !== false;
}

function userdate(int $time): string {
    return date('l, j F Y, g:i A', $time);
}

/* ---------------------------------------------------------------- files on disk */

function make_writable_directory(string $dir): string {
    global $CFG;
    if (!is_dir($dir)) {
        $umask = umask(0);
        mkdir($dir, $CFG->directorypermissions, true);
        umask($umask);
    }
    return $dir;
}

/** Deletes what a directory holds, keeping the directory itself. */
function remove_dir_contents(string $dir): void {
    if (!is_dir($dir)) {
        return;
    }
    $items = new RecursiveIteratorIterator(
        new RecursiveDirectoryIterator($dir, FilesystemIterator::SKIP_DOTS),
        RecursiveIteratorIterator::CHILD_FIRST
    );
    foreach ($items as $item) {
        $item->isDir() && !$item->isLink() ? rmdir($item->getPathname()) : unlink($item->getPathname());
    }
}

/**
 * Empties <dataroot>/cache and <dataroot>/localcache (and the request dir), bumps the
 * revision settings like Moodle does, and records when it happened.
 */
function purge_all_caches(): void {
    global $CFG, $DB;
    remove_dir_contents($CFG->cachedir);
    remove_dir_contents($CFG->localcachedir);
    if (!empty($CFG->version) && $DB->get_manager()->table_exists('config')) {
        foreach (['themerev', 'jsrev', 'langrev', 'templaterev'] as $rev) {
            set_config($rev, max(time(), (int)($CFG->$rev ?? 0) + 1));
        }
        set_config('standin_lastpurge', time());
    }
}

/* ------------------------------------------------------------------ maintenance */

function enable_cli_maintenance_mode(): void {
    global $CFG;
    $file = $CFG->dataroot . '/climaintenance.html';
    if (file_exists($file)) {
        unlink($file);
    }
    $site = !empty($CFG->version) ? get_site() : false;
    $title = get_string('sitemaintenancetitle', 'admin', $site ? $site->fullname : 'Moodle');
    $html = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>" . s($title) . "</title></head>\n"
        . "<body><div class=\"maintenance\"><h1>" . s($title) . "</h1>\n<p>"
        . s(get_string('sitemaintenance', 'admin')) . "</p></div></body></html>\n";
    file_put_contents($file, $html);
    chmod($file, $CFG->directorypermissions & 0666);
}

/* --------------------------------------------------------------------- web output */

function standin_send_status(int $code, string $reason): void {
    if (!headers_sent()) {
        header(($_SERVER['SERVER_PROTOCOL'] ?? 'HTTP/1.1') . " $code $reason", true, $code);
    }
}

function standin_page(string $title, string $body, string $bodyid = 'page-standin'): void {
    global $CFG;
    if (!headers_sent()) {
        header('Content-Type: text/html; charset=utf-8');
        header('Cache-Control: no-store, no-cache, must-revalidate');
    }
    echo "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>" . s($title) . "</title>"
        . "<meta name=\"generator\" content=\"moodle-standin\"></head>\n"
        . "<body id=\"" . s($bodyid) . "\">\n<!-- TEST STAND-IN for Moodle, not Moodle -->\n"
        . $body . "\n</body></html>\n";
}

/**
 * Moodle's redirect(): 303 See Other with a Location header and a short body.
 */
function redirect(string $url, string $message = ''): void {
    standin_send_status(303, 'See Other');
    if (!headers_sent()) {
        header('Location: ' . $url);
    }
    standin_page('Redirect', '<p>' . s($message) . '</p><p><a href="' . s($url) . '">Continue</a></p>', 'page-redirect');
    exit(0);
}

/**
 * Sends the web visitor to admin/index.php while the database is not installed or
 * does not match the code (Moodle's redirect_if_major_upgrade_required()).
 */
function redirect_if_major_upgrade_required(): void {
    global $CFG;
    if (empty($CFG->version) || moodle_needs_upgrading() || (float)$CFG->version > standin_code_version()['version']) {
        redirect($CFG->wwwroot . '/' . $CFG->admin . '/index.php');
    }
}

/**
 * Moodle's default exception handler, cut down. CLI: "!!! message !!!" on STDOUT and
 * exit code 1. Web: an error page (503 for database connection problems).
 */
function standin_default_exception_handler(Throwable $e): void {
    global $CFG;
    $message = $e->getMessage();
    if (defined('CLI_SCRIPT') && CLI_SCRIPT) {
        echo "!!! $message !!!\n";
        if (!empty($CFG->debugdeveloper) || (int)($CFG->debug ?? 0) >= 32767) {
            if ($e instanceof moodle_exception && $e->debuginfo) {
                echo "\nDebug info: {$e->debuginfo}";
            }
            echo "\nStack trace: " . $e->getTraceAsString() . "\n";
        }
        exit(1);
    }
    if ($e instanceof dml_connection_exception) {
        standin_send_status(503, 'Service Unavailable');
    } else {
        standin_send_status(500, 'Internal Server Error');
    }
    standin_page('Error', '<div class="errorbox"><p class="errormessage">' . $message . '</p></div>', 'page-error');
    exit(1);
}
