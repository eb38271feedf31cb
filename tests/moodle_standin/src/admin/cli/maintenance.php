<?php
// TEST STAND-IN for Moodle's admin/cli/maintenance.php -- NOT Moodle code.
// --enable writes <dataroot>/climaintenance.html: from then on every web page answers
// 503 with that file, while CLI scripts still run. --disable removes it.

define('CLI_SCRIPT', true);

require(__DIR__ . '/../../config.php');
require_once($CFG->libdir . '/clilib.php');

[$options, $unrecognised] = cli_get_params(
    ['enable' => false, 'enablelater' => 0, 'enableold' => false, 'disable' => false, 'help' => false],
    ['h' => 'help']
);

cli_fail_unrecognised($unrecognised);

if ($options['help']) {
    echo "Maintenance mode settings.
Current status displayed if not option specified.

Options:
--enable              Enable CLI maintenance mode
--enablelater=MINUTES Number of minutes before entering CLI maintenance mode
--enableold           Enable legacy half-maintenance mode
--disable             Disable maintenance mode
-h, --help            Print out this help

Example:
\$ sudo -u www-data /usr/bin/php admin/cli/maintenance.php
";
    exit(0);
}

cli_heading(get_string('sitemaintenancemode', 'admin') . " ($CFG->wwwroot)");

$file = "$CFG->dataroot/climaintenance.html";

if ($options['enablelater']) {
    if (file_exists($file)) {
        echo get_string('clistatusenabled', 'admin') . "\n";
        exit(0);
    }
    $time = time() + ((int)$options['enablelater'] * 60);
    set_config('maintenance_later', $time);
    echo get_string('clistatusenabledlater', 'admin', userdate($time)) . "\n";
    exit(0);

} else if ($options['enable']) {
    if (!file_exists($file)) {
        enable_cli_maintenance_mode();
    }
    set_config('maintenance_enabled', 0);
    unset_config('maintenance_later');
    echo get_string('sitemaintenanceoncli', 'admin') . "\n";
    exit(0);

} else if ($options['enableold']) {
    set_config('maintenance_enabled', 1);
    unset_config('maintenance_later');
    echo get_string('sitemaintenanceon', 'admin') . "\n";
    exit(0);

} else if ($options['disable']) {
    set_config('maintenance_enabled', 0);
    unset_config('maintenance_later');
    if (file_exists($file)) {
        unlink($file);
    }
    echo get_string('sitemaintenanceoff', 'admin') . "\n";
    exit(0);
}

if (!empty($CFG->maintenance_enabled) || file_exists($file)) {
    echo get_string('clistatusenabled', 'admin') . "\n";
} else if (isset($CFG->maintenance_later)) {
    echo get_string('clistatusenabledlater', 'admin', userdate((int)$CFG->maintenance_later)) . "\n";
} else {
    echo get_string('clistatusdisabled', 'admin') . "\n";
}
