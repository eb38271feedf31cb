<?php
// TEST STAND-IN for Moodle's admin/cli/install_database.php -- NOT Moodle code.
// Installs into an empty database; config.php must already exist. Same options,
// checks, order of checks, messages and exit codes as Moodle's script.

define('CLI_SCRIPT', true);
define('CACHE_DISABLE_ALL', true);

if (isset($_SERVER['REMOTE_ADDR'])) {
    exit(1);
}

$help = "Advanced command line Moodle database installer.
Please note you must execute this script with the same uid as apache.

Site defaults may be changed via local/defaults.php.

Options:
--lang=CODE           Installation and default site language. Default is en.
--adminuser=USERNAME  Username for the moodle admin account. Default is admin.
--adminpass=PASSWORD  Password for the moodle admin account.
--adminemail=STRING   Email address for the moodle admin account.
--agree-license       Indicates agreement with software license.
--fullname=STRING     Name of the site
--shortname=STRING    Name of the site
--summary=STRING      The summary to be displayed on the front page
--supportemail=STRING Email address for support and help.
--noreplyemail=STRING Email address used for noreply.
-h, --help            Print out this help

Example:
\$sudo -u www-data /usr/bin/php admin/cli/install_database.php --lang=cs --adminpass=soMePass123 --agree-license
";

$configfile = dirname(__DIR__, 2) . '/config.php';
// 5.1 layout: public/config.php only loads <root>/config.php, which is the one that matters.
$rootconfig = basename(dirname(__DIR__, 2)) === 'public' && is_file(dirname(__DIR__, 3) . '/lib/setup.php')
    ? dirname(__DIR__, 3) . '/config.php' : $configfile;
if (!file_exists($configfile) || !file_exists($rootconfig)) {
    fwrite(STDERR, 'config.php does not exist, can not continue');
    fwrite(STDERR, "\n");
    exit(1);
}

require($configfile);
require_once($CFG->libdir . '/clilib.php');
require_once($CFG->libdir . '/upgradelib.php');

[$options, $unrecognised] = cli_get_params([
    'lang' => 'en',
    'adminuser' => 'admin',
    'adminpass' => '',
    'adminemail' => '',
    'fullname' => '',
    'shortname' => '',
    'summary' => '',
    'supportemail' => '',
    'noreplyemail' => '',
    'agree-license' => false,
    'help' => false,
], ['h' => 'help']);

cli_fail_unrecognised($unrecognised);

if ($options['help']) {
    echo $help;
    exit(0);
}

if ($DB->get_tables()) {
    cli_error(get_string('clitablesexist', 'install'));
}

if (!$options['agree-license']) {
    cli_error('You have to agree to the license. --help prints out the help');
}

if ($options['adminpass'] === true || $options['adminpass'] === '') {
    cli_error('You have to specify admin password. --help prints out the help');
}

foreach (['adminemail', 'supportemail', 'noreplyemail'] as $emailoption) {
    $value = $options[$emailoption];
    if (!empty($value) && ($value === true || !validate_email($value))) {
        cli_error(get_string('cliincorrectvalueerror', 'admin', (object)['option' => $emailoption, 'value' => $value]));
    }
}

$options['lang'] = preg_replace('/[^a-zA-Z0-9_-]/', '', (string)$options['lang']) ?: 'en';
if ($options['lang'] !== 'en') {
    cli_problem("The stand-in has no language packs; '{$options['lang']}' is recorded as the site language only.");
}

$code = standin_code_version();
$failed = standin_failed_plugin_dependencies($code['version']);
if ($failed) {
    cli_problem(get_string('pluginscheckfailed', 'admin', ['pluginslist' => implode(', ', $failed)]));
    cli_error(get_string('pluginschecktodo', 'admin'));
}

install_cli_database($options);

echo get_string('cliinstallfinished', 'install') . "\n";
exit(0);
