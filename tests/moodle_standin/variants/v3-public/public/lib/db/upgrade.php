<?php
// TEST STAND-IN core upgrade steps -- NOT Moodle code. Same shape as Moodle's
// lib/db/upgrade.php: one block per version, each ending in upgrade_main_savepoint().

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

    if ($oldversion < 2025100600.00) {
        // The 5.1-like stand-in adds a table.
        if (!$dbman->table_exists('standin_notes')) {
            $dbman->create_table('standin_notes', ['fields' => [
                'id' => ['type' => 'int', 'sequence' => true],
                'note' => ['type' => 'text', 'notnull' => false],
                'timecreated' => ['type' => 'int', 'notnull' => true, 'default' => 0],
            ]]);
        }
        set_config('standin_schema', 3);
        upgrade_main_savepoint(true, 2025100600.00);
    }

    return true;
}
