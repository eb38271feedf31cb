<?php
// TEST STAND-IN for Moodle's admin/cli/adhoc_task.php -- NOT Moodle code.
// The stand-in has no task queue: --execute records config 'lastadhoc' and, with
// --keep-alive=N, stays alive N seconds like Moodle's runner. Same refusals (exit 1)
// as Moodle during CLI maintenance, with an upgrade pending, or with cron disabled.

define('CLI_SCRIPT', true);

require(__DIR__ . '/../../config.php');
require_once($CFG->libdir . '/clilib.php');

[$options, $unrecognised] = cli_get_params([
    'classname' => null,
    'execute' => false,
    'failed' => false,
    'force' => false,
    'help' => false,
    'id' => null,
    'ignorelimits' => false,
    'keep-alive' => 0,
    'showdebugging' => false,
    'showsql' => false,
    'taskslimit' => null,
], [
    'c' => 'classname',
    'e' => 'execute',
    'f' => 'force',
    'h' => 'help',
    'i' => 'ignorelimits',
    'k' => 'keep-alive',
    'l' => 'taskslimit',
]);

cli_fail_unrecognised($unrecognised);

$help = "Ad hoc cron tasks.

Options:
 -c, --classname        Run tasks with a certain classname (FQN)
 -e, --execute          Run all queued adhoc tasks
     --failed           Run only tasks that failed, ie those with a fail delay
 -f, --force            Run even if cron is disabled
 -h, --help             Print out this help
     --id=N             Run (failed) task with id
 -i  --ignorelimits     Ignore task_adhoc_concurrency_limit and task_adhoc_max_runtime limits
 -k, --keep-alive=N     Keep this script alive for N seconds and poll for new adhoc tasks
 -l, --taskslimit=N     Run at most N tasks
     --showsql          Show sql queries before they are executed
     --showdebugging    Show developer level debugging information

Example:
\$sudo -u www-data /usr/bin/php admin/cli/adhoc_task.php --execute
";

if ($options['help'] || !($options['execute'] || $options['id'] || $options['failed'] || $options['classname'])) {
    echo $help;
    exit(0);
}

if (CLI_MAINTENANCE) {
    echo "CLI maintenance mode active, cron execution suspended.\n";
    exit(1);
}
if (moodle_needs_upgrading()) {
    echo "Moodle upgrade pending, cron execution suspended.\n";
    exit(1);
}
if (!get_config('core', 'cron_enabled') && !$options['force']) {
    mtrace('Cron is disabled. Use --force to override.');
    exit(1);
}

mtrace('Server Time: ' . date('r') . "\n");
$keepalive = max(0, (int)$options['keep-alive']);
$started = time();
do {
    set_config('lastadhoc', time());
    if (time() - $started < $keepalive) {
        sleep(1);
    }
} while (time() - $started < $keepalive);
exit(0);
