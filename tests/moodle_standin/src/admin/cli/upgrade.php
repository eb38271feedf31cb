<?php
// TEST STAND-IN for Moodle's admin/cli/upgrade.php -- NOT Moodle code.
// Same options, order of checks, messages and exit codes as Moodle's script:
//   0 upgraded, or nothing to do ("No upgrade needed ..." on STDERR)
//   1 any error: unknown option, downgrade, failed step, unstable code without
//     --allow-unstable, failed plugin dependencies, answer "n"
//   2 --is-pending and an upgrade is pending

define('CLI_SCRIPT', true);
define('CACHE_DISABLE_ALL', true);

require(__DIR__ . '/../../config.php');
require_once($CFG->libdir . '/clilib.php');
require_once($CFG->libdir . '/upgradelib.php');

[$options, $unrecognised] = cli_get_params([
    'non-interactive' => false,
    'allow-unstable' => false,
    'help' => false,
    'lang' => $CFG->lang ?? 'en',
    'verbose-settings' => false,
    'is-pending' => false,
], ['h' => 'help']);

$interactive = empty($options['non-interactive']);

cli_fail_unrecognised($unrecognised);

if ($options['help']) {
    echo "Command line Moodle upgrade.
Please note you must execute this script with the same uid as apache!

Site defaults may be changed via local/defaults.php.

Options:
--non-interactive     No interactive questions or confirmations
--allow-unstable      Upgrade even if the version is not marked as stable yet,
                      required in non-interactive mode.
--lang=CODE           Set preferred language for CLI output. Defaults to the
                      site language if not set. Defaults to 'en' if the lang
                      parameter is invalid or if the language pack is not
                      installed.
--verbose-settings    Show new settings values. By default only the name of
                      new core or plugin settings are displayed. This option
                      outputs the new values as well as the setting name.
--is-pending          If an upgrade is needed it exits with an error code of
                      2 so it distinct from other types of errors.
-h, --help            Print out this help

Example:
\$sudo -u www-data /usr/bin/php admin/cli/upgrade.php
";
    exit(0);
}

if (empty($CFG->version)) {
    cli_error(get_string('missingconfigversion', 'debug'));
}

$code = standin_code_version();
$version = $code['version'];
$release = $code['release'];
$maturity = $code['maturity'];

if ($version < (float)$CFG->version) {
    cli_error(get_string('downgradedcore', 'error'));
}

$oldversion = ($CFG->release ?? '') . " ({$CFG->version})";
$newversion = "$release ($version)";

if (!moodle_needs_upgrading()) {
    cli_error(get_string('cliupgradenoneed', 'admin', $newversion), 0);
}

if ($options['is-pending']) {
    cli_error(get_string('cliupgradepending', 'admin'), 2);
}

$failed = standin_failed_plugin_dependencies($version);
if ($failed) {
    cli_problem(get_string('pluginscheckfailed', 'admin', ['pluginslist' => implode(', ', $failed)]));
    cli_error(get_string('pluginschecktodo', 'admin'));
}

$a = (object)['oldversion' => $oldversion, 'newversion' => $newversion];

if ($interactive) {
    echo cli_heading("Upgrading Moodle database from version $oldversion to $newversion", true) . PHP_EOL;
}

if (isset($maturity) && $maturity < MATURITY_STABLE && !$options['allow-unstable']) {
    $maturitylevel = get_string('maturity' . $maturity, 'admin');
    if ($interactive) {
        cli_separator();
        cli_heading('Notice');
        echo get_string('maturitycorewarning', 'admin', $maturitylevel) . PHP_EOL;
        cli_separator();
    } else {
        cli_problem(get_string('maturitycorewarning', 'admin', $maturitylevel));
        cli_error(get_string('maturityallowunstable', 'admin'));
    }
}

if ($interactive) {
    echo get_string('upgradesure', 'admin', $newversion) . "\n";
    $input = cli_input(get_string('cliyesnoprompt', 'admin'), '', [get_string('clianswerno', 'admin'), get_string('cliansweryes', 'admin')]);
    if ($input === get_string('clianswerno', 'admin')) {
        exit(1);
    }
}

if ($version > (float)$CFG->version) {
    upgrade_core($version);
}
set_config('release', $release);
set_config('branch', $code['branch']);

upgrade_noncore(true);

$admin = get_admin();
if ($admin) {
    \core\session\manager::set_user($admin);
}

cli_heading(get_string('cliupgradedefaultheading', 'admin'));

echo get_string('cliupgradefinished', 'admin', $a) . "\n";
exit(0);
