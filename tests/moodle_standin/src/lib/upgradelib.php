<?php
// TEST STAND-IN install/upgrade machinery -- NOT Moodle code.
// Mirrors Moodle's flow: core steps in lib/db/upgrade.php (xmldb_main_upgrade) keyed by
// version with upgrade_main_savepoint(); plugins in mod/<name>/ with version.php and
// db/upgrade.php (xmldb_<name>_upgrade) and upgrade_mod_savepoint(); versions kept in
// config ('version', 'release', 'branch') and config_plugins (<component>, 'version').
// A step that fails leaves the database at the last savepoint, as in Moodle.

defined('MOODLE_INTERNAL') || die();

/** Version of the schema in lib/db/standin_schema.php; newer steps run on install too. */
const STANDIN_BASE_SCHEMA_VERSION = 2024100700.00;

const UPGRADE_LOG_NORMAL = 0;
const UPGRADE_LOG_NOTICE = 1;
const UPGRADE_LOG_ERROR = 2;

function upgrade_log(int $type, ?string $plugin, string $info, ?string $details = null, $version = null, $targetversion = null): void {
    global $DB, $USER;
    $DB->insert_record('upgrade_log', [
        'type' => $type, 'plugin' => $plugin ?? 'core', 'version' => $version === null ? null : (string)$version,
        'targetversion' => $targetversion === null ? null : (string)$targetversion, 'info' => $info,
        'details' => $details, 'backtrace' => null, 'userid' => (int)($USER->id ?? 0), 'timemodified' => time(),
    ]);
}

function upgrade_started(): void {
    set_config('upgraderunning', time() + 300);
}

function upgrade_finished(): void {
    unset_config('upgraderunning');
}

function standin_progress(string $component, float $started): void {
    if (CLI_SCRIPT) {
        mtrace("-->$component");
        mtrace(sprintf('++ Success (%.2f seconds) ++', microtime(true) - $started));
    }
}

/**
 * Records that the core upgrade reached $version. Steps must move forward only.
 */
function upgrade_main_savepoint(bool $result, $version, bool $allowabort = true): void {
    global $CFG;
    if (!$result) {
        throw new upgrade_exception(null, $version);
    }
    if ((float)$CFG->version >= (float)$version) {
        throw new downgrade_exception(null, $CFG->version, $version);
    }
    set_config('version', $version);
    upgrade_log(UPGRADE_LOG_NORMAL, null, 'Upgrade savepoint reached', null, $version);
}

function upgrade_plugin_savepoint(bool $result, $version, string $type, string $plugin, bool $allowabort = true): void {
    $component = $type . '_' . $plugin;
    if (!$result) {
        throw new upgrade_exception($component, $version);
    }
    $installed = get_config($component, 'version');
    if ($installed !== false && (float)$installed >= (float)$version) {
        throw new downgrade_exception($component, $installed, $version);
    }
    set_config('version', $version, $component);
    upgrade_log(UPGRADE_LOG_NORMAL, $component, 'Upgrade savepoint reached', null, $version);
}

function upgrade_mod_savepoint(bool $result, $version, string $modname, bool $allowabort = true): void {
    upgrade_plugin_savepoint($result, $version, 'mod', $modname, $allowabort);
}

/**
 * Runs the core steps newer than the database and records the new version.
 */
function upgrade_core(float $version): void {
    global $CFG;
    $started = microtime(true);
    upgrade_started();
    upgrade_log(UPGRADE_LOG_NORMAL, null, 'Starting core upgrade', null, $CFG->version, $version);
    require_once($CFG->libdir . '/db/upgrade.php');
    $result = xmldb_main_upgrade((float)$CFG->version);
    if ($version > (float)$CFG->version) {
        upgrade_main_savepoint($result, $version, false);
    }
    $code = standin_code_version();
    set_config('release', $code['release']);
    set_config('branch', $code['branch']);
    purge_all_caches();
    upgrade_log(UPGRADE_LOG_NORMAL, null, 'Core upgraded', null, $version);
    standin_progress('System', $started);
}

/**
 * Installs new plugins and upgrades changed ones. A plugin older on disk than in the
 * database is a downgrade and stops everything, as in Moodle.
 */
function upgrade_noncore(bool $verbose = true): void {
    global $DB;
    upgrade_started();
    foreach (standin_get_plugins() as $component => $plugin) {
        $started = microtime(true);
        $installed = get_config($component, 'version');
        if ($installed === false) {
            if (is_file("$plugin->dir/db/standin_schema.php")) {
                $DB->get_manager()->install_from_file("$plugin->dir/db/standin_schema.php");
            }
            if (is_file("$plugin->dir/db/install.php")) {
                require_once("$plugin->dir/db/install.php");
                $hook = "xmldb_{$plugin->name}_install";
                if (function_exists($hook)) {
                    $hook();
                }
            }
            set_config('version', $plugin->version, $component);
            standin_update_plugin_definitions($plugin);
            upgrade_log(UPGRADE_LOG_NORMAL, $component, 'Plugin installed', null, $plugin->version);
        } else if ((float)$installed < (float)$plugin->version) {
            upgrade_log(UPGRADE_LOG_NORMAL, $component, 'Starting plugin upgrade', null, $installed, $plugin->version);
            $result = true;
            if (is_file("$plugin->dir/db/upgrade.php")) {
                require_once("$plugin->dir/db/upgrade.php");
                $function = "xmldb_{$plugin->name}_upgrade";
                $result = $function((float)$installed);
            }
            if ((float)get_config($component, 'version') < (float)$plugin->version) {
                upgrade_mod_savepoint((bool)$result, $plugin->version, $plugin->name);
            }
            standin_update_plugin_definitions($plugin);
            upgrade_log(UPGRADE_LOG_NORMAL, $component, 'Plugin upgraded', null, $plugin->version);
        } else if ((float)$installed > (float)$plugin->version) {
            throw new downgrade_exception($component, $installed, $plugin->version);
        } else {
            continue;
        }
        if ($verbose) {
            standin_progress($component, $started);
        }
    }
    upgrade_finished();
}

/**
 * Fresh install into an empty database (Moodle's install_cli_database()).
 *
 * @param array $options lang, adminuser, adminpass, adminemail, fullname, shortname,
 *                       summary, supportemail, noreplyemail
 */
function install_cli_database(array $options): void {
    global $CFG, $DB;
    $started = microtime(true);
    $code = standin_code_version();

    foreach (['filedir', 'sessions', 'cache', 'localcache', 'temp', 'lang'] as $dir) {
        make_writable_directory($CFG->dataroot . '/' . $dir);
    }

    $DB->get_manager()->install_from_file($CFG->libdir . '/db/standin_schema.php');
    context_system::instance();
    standin_update_capabilities('webservice_rest', ['webservice/rest:use' => ['captype' => 'read', 'contextlevel' => CONTEXT_COURSE]]);
    $CFG->version = '';
    set_config('version', STANDIN_BASE_SCHEMA_VERSION);
    upgrade_started();
    upgrade_log(UPGRADE_LOG_NORMAL, null, 'Starting core install', null, null, $code['version']);
    if ($code['version'] > STANDIN_BASE_SCHEMA_VERSION) {
        require_once($CFG->libdir . '/db/upgrade.php');
        $result = xmldb_main_upgrade(STANDIN_BASE_SCHEMA_VERSION);
        if ($code['version'] > (float)$CFG->version) {
            upgrade_main_savepoint($result, $code['version'], false);
        }
    }
    set_config('release', $code['release']);
    set_config('branch', $code['branch']);
    set_config('lang', $options['lang'] ?? 'en');
    set_config('siteidentifier', random_string(32) . parse_url($CFG->wwwroot, PHP_URL_HOST));
    set_config('cron_enabled', 1);
    set_config('rolesactive', 1);
    set_config('mnet_localhost_id', 1);

    $now = time();
    $DB->insert_record('course', [
        'category' => 0, 'sortorder' => 1, 'fullname' => (string)($options['fullname'] ?? ''),
        'shortname' => (string)($options['shortname'] ?? ''), 'summary' => (string)($options['summary'] ?? ''),
        'summaryformat' => 1, 'format' => 'site', 'visible' => 1, 'timecreated' => $now, 'timemodified' => $now,
    ]);
    $user = ['auth' => 'manual', 'confirmed' => 1, 'mnethostid' => 1, 'lang' => $options['lang'] ?? 'en',
        'timecreated' => $now, 'timemodified' => $now];
    $DB->insert_record('user', $user + ['username' => 'guest', 'password' => password_hash(random_string(20), PASSWORD_DEFAULT),
        'firstname' => 'Guest user', 'lastname' => ' ', 'email' => 'root@localhost']);
    $adminid = $DB->insert_record('user', $user + ['username' => 'admin', 'password' => password_hash((string)$options['adminpass'], PASSWORD_DEFAULT),
        'firstname' => 'Admin', 'lastname' => 'User', 'email' => 'root@localhost']);
    if (!empty($options['adminemail'])) {
        $DB->set_field('user', 'email', $options['adminemail'], ['id' => $adminid]);
    }
    if (!empty($options['adminuser']) && $options['adminuser'] !== 'admin' && $options['adminuser'] !== 'guest') {
        $DB->set_field('user', 'username', $options['adminuser'], ['id' => $adminid]);
    }
    set_config('siteguest', 1);
    set_config('siteadmins', (string)$adminid);
    if (!empty($options['supportemail'])) {
        set_config('supportemail', $options['supportemail']);
    } else if (!empty($options['adminemail'])) {
        set_config('supportemail', $options['adminemail']);
    }
    if (!empty($options['noreplyemail'])) {
        set_config('noreplyaddress', $options['noreplyemail']);
    }
    upgrade_log(UPGRADE_LOG_NORMAL, null, 'Core installed', null, $code['version']);
    standin_progress('System', $started);

    upgrade_noncore(true);
    upgrade_finished();
    set_config('registrationpending', 1);
}

/**
 * Stores a component's capabilities (its db/access.php $capabilities) like Moodle's
 * update_capabilities(): new ones added, changed ones updated, gone ones removed.
 */
function standin_update_capabilities(string $component, array $capabilities): void {
    global $DB;
    $stored = [];
    foreach ($DB->get_records('capabilities', ['component' => $component]) as $row) {
        $stored[$row->name] = $row;
    }
    foreach ($capabilities as $name => $def) {
        $row = ['name' => $name, 'captype' => $def['captype'] ?? 'read', 'contextlevel' => (int)($def['contextlevel'] ?? CONTEXT_SYSTEM),
            'component' => $component, 'riskbitmask' => (int)($def['riskbitmask'] ?? 0)];
        if (isset($stored[$name])) {
            $DB->update_record('capabilities', ['id' => $stored[$name]->id] + $row);
            unset($stored[$name]);
        } else {
            $DB->insert_record('capabilities', $row);
        }
    }
    foreach ($stored as $name => $row) {
        $DB->delete_records('capabilities', ['id' => $row->id]);
        $DB->delete_records('role_capabilities', ['capability' => $name]);
    }
}

/**
 * Stores a component's web-service functions and services (its db/services.php
 * $functions and $services) like Moodle's external_update_descriptions(): services are
 * keyed by name; their enabled/restrictedusers/shortname follow the file.
 */
function standin_update_external_descriptions(string $component, array $functions, array $services): void {
    global $DB;
    $DB->delete_records('external_functions', ['component' => $component]);
    foreach ($functions as $name => $def) {
        $DB->insert_record('external_functions', ['name' => $name, 'classname' => $def['classname'],
            'methodname' => $def['methodname'] ?? 'execute', 'classpath' => $def['classpath'] ?? null,
            'component' => $component, 'capabilities' => $def['capabilities'] ?? '']);
    }
    foreach ($services as $name => $def) {
        $row = ['name' => $name, 'enabled' => (int)($def['enabled'] ?? 0),
            'requiredcapability' => $def['requiredcapability'] ?? null, 'restrictedusers' => (int)($def['restrictedusers'] ?? 1),
            'component' => $component, 'shortname' => $def['shortname'] ?? null,
            'downloadfiles' => (int)($def['downloadfiles'] ?? 0), 'uploadfiles' => (int)($def['uploadfiles'] ?? 0),
            'timemodified' => time()];
        $service = $DB->get_record('external_services', ['name' => $name, 'component' => $component]);
        if ($service) {
            $DB->update_record('external_services', ['id' => $service->id] + $row);
            $serviceid = (int)$service->id;
        } else {
            $serviceid = $DB->insert_record('external_services', $row + ['timecreated' => time()]);
        }
        $DB->delete_records('external_services_functions', ['externalserviceid' => $serviceid]);
        foreach ($def['functions'] ?? [] as $function) {
            $DB->insert_record('external_services_functions', ['externalserviceid' => $serviceid, 'functionname' => $function]);
        }
    }
}

/** A plugin's db/access.php and db/services.php, read after its install or upgrade. */
function standin_update_plugin_definitions(stdClass $plugin): void {
    $capabilities = [];
    if (is_file("$plugin->dir/db/access.php")) {
        require("$plugin->dir/db/access.php");
    }
    standin_update_capabilities($plugin->component, $capabilities);
    $functions = [];
    $services = [];
    if (is_file("$plugin->dir/db/services.php")) {
        require("$plugin->dir/db/services.php");
    }
    standin_update_external_descriptions($plugin->component, $functions, $services);
}
