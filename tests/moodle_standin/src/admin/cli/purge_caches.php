<?php
// TEST STAND-IN for Moodle's admin/cli/purge_caches.php -- NOT Moodle code.
// Empties <dataroot>/cache and <dataroot>/localcache. Note: Moodle's script exits
// with code 2 (not 1) on unknown options, and so does this one.

define('CLI_SCRIPT', true);
define('IGNORE_COMPONENT_CACHE', true);

require(__DIR__ . '/../../config.php');
require_once($CFG->libdir . '/clilib.php');

[$options, $unrecognised] = cli_get_params([
    'help' => false,
    'muc' => false,
    'courses' => false,
    'theme' => false,
    'lang' => false,
    'js' => false,
    'filter' => false,
    'other' => false,
], ['h' => 'help']);

cli_fail_unrecognised($unrecognised, 2);

if ($options['help']) {
    echo "Invalidates Moodle internal caches

Specific caches can be defined (alone or in combination) using arguments. If none are specified,
all caches will be purged.

Options:
-h, --help            Print out this help
    --muc             Purge all MUC caches (includes lang cache)
    --courses         Purge all course caches (or only those specified by a comma-separated list).
                      e.g. --courses=4,67,145
    --theme           Purge theme cache
    --lang            Purge language string cache
    --js              Purge JavaScript cache
    --filter          Purge text filter cache
    --other           Purge all file caches and other miscellaneous caches (may include MUC
                      if using cachestore_file).

Example:
\$ sudo -u www-data /usr/bin/php admin/cli/purge_caches.php

";
    exit(0);
}

// The stand-in keeps no separate caches, so any selection purges everything.
purge_all_caches();
exit(0);
