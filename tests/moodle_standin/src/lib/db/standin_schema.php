<?php
// TEST STAND-IN core schema (plays the part of lib/db/install.xml) -- NOT Moodle code.
// Table and column names follow Moodle's for the tables a deployment touches;
// 'standin_data' exists only in the stand-in.
// This is the schema of the first stand-in release (4.5, 2024100700); later stand-in
// releases change it through lib/db/upgrade.php, also on a fresh install.

defined('MOODLE_INTERNAL') || die();

$id = ['type' => 'int', 'sequence' => true];
$int = static fn(int $default = 0) => ['type' => 'int', 'notnull' => true, 'default' => $default];
$char = static fn(int $length, string $default = '') => ['type' => 'char', 'length' => $length, 'notnull' => true, 'default' => $default];
$text = ['type' => 'text', 'notnull' => false];

return [
    'config' => [
        'fields' => ['id' => $id, 'name' => $char(255), 'value' => ['type' => 'text', 'notnull' => true]],
        'indexes' => [['fields' => ['name'], 'unique' => true]],
    ],
    'config_plugins' => [
        'fields' => ['id' => $id, 'plugin' => $char(100, 'core'), 'name' => $char(100), 'value' => ['type' => 'text', 'notnull' => true]],
        'indexes' => [['fields' => ['plugin', 'name'], 'unique' => true]],
    ],
    'upgrade_log' => [
        'fields' => [
            'id' => $id, 'type' => $int(), 'plugin' => ['type' => 'char', 'length' => 100, 'notnull' => false],
            'version' => ['type' => 'char', 'length' => 100, 'notnull' => false],
            'targetversion' => ['type' => 'char', 'length' => 100, 'notnull' => false],
            'info' => $char(255), 'details' => $text, 'backtrace' => $text, 'userid' => $int(), 'timemodified' => $int(),
        ],
        'indexes' => [['fields' => ['timemodified']]],
    ],
    'user' => [
        'fields' => [
            'id' => $id, 'auth' => $char(20, 'manual'), 'confirmed' => $int(), 'policyagreed' => $int(), 'deleted' => $int(),
            'suspended' => $int(), 'mnethostid' => $int(), 'username' => $char(100), 'password' => $char(255),
            'idnumber' => $char(255), 'firstname' => $char(100), 'lastname' => $char(100), 'email' => $char(100),
            'lang' => $char(30, 'en'), 'timezone' => $char(100, '99'), 'firstaccess' => $int(), 'lastaccess' => $int(),
            'lastlogin' => $int(), 'currentlogin' => $int(), 'timecreated' => $int(), 'timemodified' => $int(),
        ],
        'indexes' => [['fields' => ['mnethostid', 'username'], 'unique' => true], ['fields' => ['email']]],
    ],
    'course' => [
        'fields' => [
            'id' => $id, 'category' => $int(), 'sortorder' => $int(), 'fullname' => $char(254), 'shortname' => $char(255),
            'idnumber' => $char(100), 'summary' => $text, 'summaryformat' => $int(), 'format' => $char(21, 'topics'),
            'visible' => $int(1), 'timecreated' => $int(), 'timemodified' => $int(),
        ],
        'indexes' => [['fields' => ['category']], ['fields' => ['shortname']]],
    ],
    'sessions' => [
        'fields' => [
            'id' => $id, 'state' => $int(), 'sid' => $char(128), 'userid' => $int(), 'sessdata' => $text,
            'timecreated' => $int(), 'timemodified' => $int(), 'firstip' => $char(45), 'lastip' => $char(45),
        ],
        'indexes' => [['fields' => ['sid'], 'unique' => true], ['fields' => ['userid']]],
    ],
    'files' => [
        'fields' => [
            'id' => $id, 'contenthash' => $char(40), 'pathnamehash' => $char(40), 'contextid' => $int(),
            'component' => $char(100), 'filearea' => $char(50), 'itemid' => $int(), 'filepath' => $char(255),
            'filename' => $char(255), 'userid' => ['type' => 'int', 'notnull' => false], 'filesize' => $int(),
            'mimetype' => ['type' => 'char', 'length' => 100, 'notnull' => false], 'status' => $int(),
            'source' => $text, 'author' => ['type' => 'char', 'length' => 255, 'notnull' => false],
            'license' => ['type' => 'char', 'length' => 255, 'notnull' => false],
            'timecreated' => $int(), 'timemodified' => $int(), 'sortorder' => $int(),
        ],
        'indexes' => [['fields' => ['pathnamehash'], 'unique' => true], ['fields' => ['contenthash']]],
    ],
    // Access control, cut down to what web-service set-up needs (Moodle's names).
    'context' => [
        'fields' => ['id' => $id, 'contextlevel' => $int(), 'instanceid' => $int(), 'path' => $char(255),
            'depth' => $int(), 'locked' => $int()],
        'indexes' => [['fields' => ['contextlevel', 'instanceid'], 'unique' => true]],
    ],
    'capabilities' => [
        'fields' => ['id' => $id, 'name' => $char(255), 'captype' => $char(50), 'contextlevel' => $int(),
            'component' => $char(100), 'riskbitmask' => $int()],
        'indexes' => [['fields' => ['name'], 'unique' => true]],
    ],
    'role' => [
        'fields' => ['id' => $id, 'name' => $char(255), 'shortname' => $char(100), 'description' => $text,
            'sortorder' => $int(), 'archetype' => $char(30)],
        'indexes' => [['fields' => ['shortname'], 'unique' => true]],
    ],
    'role_context_levels' => [
        'fields' => ['id' => $id, 'roleid' => $int(), 'contextlevel' => $int()],
        'indexes' => [['fields' => ['contextlevel', 'roleid'], 'unique' => true]],
    ],
    'role_capabilities' => [
        'fields' => ['id' => $id, 'contextid' => $int(), 'roleid' => $int(), 'capability' => $char(255),
            'permission' => $int(), 'timemodified' => $int(), 'modifierid' => $int()],
        'indexes' => [['fields' => ['roleid', 'contextid', 'capability'], 'unique' => true]],
    ],
    'role_assignments' => [
        'fields' => ['id' => $id, 'roleid' => $int(), 'contextid' => $int(), 'userid' => $int(),
            'timemodified' => $int(), 'modifierid' => $int(), 'component' => $char(100), 'itemid' => $int(),
            'sortorder' => $int()],
        'indexes' => [['fields' => ['userid', 'contextid', 'roleid']]],
    ],
    // Web services (webservice/lib.php, lib/external): functions and services of the
    // plugins' db/services.php, authorised users, tokens.
    'external_functions' => [
        'fields' => ['id' => $id, 'name' => $char(200), 'classname' => $char(100), 'methodname' => $char(100),
            'classpath' => ['type' => 'char', 'length' => 255, 'notnull' => false], 'component' => $char(100),
            'capabilities' => ['type' => 'char', 'length' => 255, 'notnull' => false], 'services' => $text],
        'indexes' => [['fields' => ['name'], 'unique' => true]],
    ],
    'external_services' => [
        'fields' => ['id' => $id, 'name' => $char(200), 'enabled' => $int(), 'requiredcapability' =>
            ['type' => 'char', 'length' => 150, 'notnull' => false], 'restrictedusers' => $int(),
            'component' => ['type' => 'char', 'length' => 100, 'notnull' => false], 'timecreated' => $int(),
            'timemodified' => ['type' => 'int', 'notnull' => false],
            'shortname' => ['type' => 'char', 'length' => 255, 'notnull' => false],
            'downloadfiles' => $int(), 'uploadfiles' => $int()],
        'indexes' => [['fields' => ['name'], 'unique' => true]],
    ],
    'external_services_functions' => [
        'fields' => ['id' => $id, 'externalserviceid' => $int(), 'functionname' => $char(200)],
        'indexes' => [['fields' => ['externalserviceid']]],
    ],
    'external_services_users' => [
        'fields' => ['id' => $id, 'externalserviceid' => $int(), 'userid' => $int(),
            'iprestriction' => ['type' => 'char', 'length' => 255, 'notnull' => false],
            'validuntil' => ['type' => 'int', 'notnull' => false], 'timecreated' => ['type' => 'int', 'notnull' => false]],
        'indexes' => [['fields' => ['externalserviceid', 'userid']]],
    ],
    'external_tokens' => [
        'fields' => ['id' => $id, 'token' => $char(128), 'privatetoken' => ['type' => 'char', 'length' => 64, 'notnull' => false],
            'tokentype' => $int(), 'userid' => $int(), 'externalserviceid' => $int(),
            'sid' => ['type' => 'char', 'length' => 128, 'notnull' => false], 'contextid' => $int(), 'creatorid' => $int(1),
            'iprestriction' => ['type' => 'char', 'length' => 255, 'notnull' => false],
            'validuntil' => ['type' => 'int', 'notnull' => false], 'timecreated' => $int(),
            'lastaccess' => ['type' => 'int', 'notnull' => false],
            'name' => ['type' => 'char', 'length' => 255, 'notnull' => false]],
        'indexes' => [['fields' => ['token'], 'unique' => true], ['fields' => ['userid']]],
    ],
    // Stand-in only: rows the tests write before an upgrade and read back after it.
    'standin_data' => [
        'fields' => ['id' => $id, 'content' => ['type' => 'text', 'notnull' => true], 'timecreated' => $int()],
    ],
];
