<?php
// TEST STAND-IN core upgrade steps -- NOT Moodle code. Same shape as Moodle's
// lib/db/upgrade.php: one block per version, each ending in upgrade_main_savepoint().
// Stand-in release 4.5 (2024100700) is the base schema: no steps yet.

defined('MOODLE_INTERNAL') || die();

function xmldb_main_upgrade($oldversion): bool {
    return true;
}
