<?php
// TEST STAND-IN core upgrade steps -- NOT Moodle code. Same shape as Moodle's
// lib/db/upgrade.php: one block per version, each ending in upgrade_main_savepoint().
// Step 2024100702 FAILS HALF WAY ON PURPOSE: it changes data, then throws, so the
// database is left between two versions, as a real failed upgrade would leave it.

defined('MOODLE_INTERNAL') || die();

function xmldb_main_upgrade($oldversion): bool {
    global $DB;
    $dbman = $DB->get_manager();

    if ($oldversion < 2024100701.00) {
        // Schema change: standin_data gets a "textlength" column, filled from the
        // existing rows (a data migration), and the site records the step.
        if (!$dbman->field_exists('standin_data', 'textlength')) {
            $dbman->add_field('standin_data', 'textlength', ['type' => 'int', 'notnull' => true, 'default' => 0]);
        }
        $DB->execute('UPDATE {standin_data} SET textlength = CHAR_LENGTH(content)');
        set_config('standin_schema', 2);
        upgrade_main_savepoint(true, 2024100701.00);
    }

    if ($oldversion < 2024100702.00) {
        // Half of a change is done ...
        $DB->execute("UPDATE {standin_data} SET content = CONCAT('BROKEN UPGRADE: ', content)");
        set_config('standin_broken_step', 'started');
        // ... and then the step fails before its savepoint.
        throw new upgrade_exception(null, 2024100702.00, 'Stand-in step 2024100702 fails on purpose.');
    }

    return true;
}
