<?php
// TEST STAND-IN for Moodle's admin/cli/cron.php -- NOT Moodle code.
// Options as in Moodle 4.2+ (no option = run cron; -e is --enable, not "execute").
// Like Moodle's cron runner it refuses (exit 1) during CLI maintenance, while an
// upgrade is pending, or when cron is disabled (unless --force).
// What a run does here: config 'lastcron', and a line in <dataroot>/standin_cron.log.
// Real Moodle keeps a run alive for $CFG->cron_keepalive seconds (3 minutes by
// default); the stand-in only does that when --keep-alive or $CFG->cron_keepalive is set.

define('CLI_SCRIPT', true);

require(__DIR__ . '/../../config.php');
require_once($CFG->libdir . '/clilib.php');

[$options, $unrecognised] = cli_get_params([
    'help' => false,
    'stop' => false,
    'list' => false,
    'force' => false,
    'enable' => false,
    'disable' => false,
    'disable-wait' => false,
    'keep-alive' => null,
], [
    'h' => 'help',
    's' => 'stop',
    'l' => 'list',
    'f' => 'force',
    'e' => 'enable',
    'd' => 'disable',
    'w' => 'disable-wait',
    'k' => 'keep-alive',
]);

cli_fail_unrecognised($unrecognised);

if ($options['help']) {
    echo "Execute periodic cron actions.

Options:
-h, --help               Print out this help
-s, --stop               Notify all other running cron processes to stop after the current task
-l, --list               Show the list of currently running tasks and how long they have been running
-f, --force              Execute task even if cron is disabled
-e, --enable             Enable cron
-d, --disable            Disable cron
-w, --disable-wait=600   Disable cron and wait until all tasks finished or fail after N seconds (optional param)
-k, --keep-alive=N       Keep this script alive for N seconds and poll for new adhoc tasks

Example:
\$sudo -u www-data /usr/bin/php admin/cli/cron.php
";
    exit(0);
}

if ($options['stop']) {
    exit(0);
}
if ($options['enable']) {
    set_config('cron_enabled', 1);
    mtrace('Cron has been enabled for the site.');
    exit(0);
}
if ($options['disable']) {
    set_config('cron_enabled', 0);
    mtrace('Cron has been disabled for the site.');
    exit(0);
}
if ($options['list']) {
    mtrace('The list of currently running tasks:');
    printf("%7s %-12s %-9s %-20s %-52s\n", 'PID', 'HOST', 'TYPE', 'TIME', 'CLASSNAME');
    exit(0);
}
if ($options['disable-wait']) {
    set_config('cron_enabled', 0);
    mtrace('Cron has been disabled for the site.');
    mtrace('');
    mtrace('All scheduled and adhoc tasks finished.');
    exit(0);
}

if (!get_config('core', 'cron_enabled') && !$options['force']) {
    mtrace('Cron is disabled. Use --force to override.');
    exit(1);
}

if (CLI_MAINTENANCE) {
    echo "CLI maintenance mode active, cron execution suspended.\n";
    exit(1);
}
if (moodle_needs_upgrading()) {
    echo "Moodle upgrade pending, cron execution suspended.\n";
    exit(1);
}

$keepalive = (int)($options['keep-alive'] ?? ($CFG->cron_keepalive ?? 0));
$started = time();
do {
    $now = time();
    mtrace('Server Time: ' . date('r', $now) . "\n");
    set_config('lastcron', $now);
    file_put_contents("$CFG->dataroot/standin_cron.log", date('c', $now) . " cron run\n", FILE_APPEND);
    mtrace('Cron run completed correctly');
    if (time() - $started < $keepalive) {
        sleep(1);
    }
} while (time() - $started < $keepalive);
exit(0);
