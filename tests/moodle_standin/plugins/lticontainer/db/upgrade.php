<?php
// TEST STAND-IN upgrade steps for the fake mod_lticontainer -- NOT the real plugin.

defined('MOODLE_INTERNAL') || die();

function xmldb_lticontainer_upgrade($oldversion) {
    global $DB;
    $dbman = $DB->get_manager();

    if ($oldversion < 2025052600) {
        // Older stand-in versions had no podman switch.
        if (!$dbman->field_exists('lticontainer', 'use_podman')) {
            $dbman->add_field('lticontainer', 'use_podman', ['type' => 'int', 'notnull' => true, 'default' => 0]);
        }
        upgrade_mod_savepoint(true, 2025052600, 'lticontainer');
    }

    return true;
}
