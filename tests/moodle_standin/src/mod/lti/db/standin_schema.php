<?php
// TEST STAND-IN schema for mod_lti (plays the part of mod/lti/db/install.xml) -- NOT
// Moodle code. Tables and columns as in Moodle 4.5's mod_lti for the tool-type tables.

defined('MOODLE_INTERNAL') || die();

$id = ['type' => 'int', 'sequence' => true];
$int = static fn(int $default = 0) => ['type' => 'int', 'notnull' => true, 'default' => $default];
$nullint = ['type' => 'int', 'notnull' => false];
$text = ['type' => 'text', 'notnull' => false];

return [
    'lti' => [
        'fields' => [
            'id' => $id, 'course' => $int(), 'name' => ['type' => 'char', 'length' => 255, 'notnull' => true, 'default' => ''],
            'intro' => $text, 'introformat' => $int(), 'timecreated' => $int(), 'timemodified' => $int(),
            'typeid' => $nullint, 'toolurl' => ['type' => 'text', 'notnull' => true], 'securetoolurl' => $text,
            'launchcontainer' => $int(1), 'resourcekey' => ['type' => 'char', 'length' => 255, 'notnull' => false],
            'password' => ['type' => 'char', 'length' => 255, 'notnull' => false], 'instructorcustomparameters' => $text,
            'grade' => $int(100), 'servicesalt' => ['type' => 'char', 'length' => 40, 'notnull' => false],
        ],
        'indexes' => [['fields' => ['course']]],
    ],
    'lti_types' => [
        'fields' => [
            'id' => $id,
            'name' => ['type' => 'char', 'length' => 255, 'notnull' => true, 'default' => 'basiclti Activity'],
            'baseurl' => ['type' => 'text', 'notnull' => true],
            'tooldomain' => ['type' => 'char', 'length' => 255, 'notnull' => true, 'default' => ''],
            'state' => $int(2),
            'course' => $int(),
            'coursevisible' => $int(),
            'ltiversion' => ['type' => 'char', 'length' => 10, 'notnull' => true, 'default' => ''],
            'clientid' => ['type' => 'char', 'length' => 255, 'notnull' => false],
            'toolproxyid' => $nullint,
            'enabledcapability' => $text,
            'parameter' => $text,
            'icon' => $text,
            'secureicon' => $text,
            'createdby' => $int(),
            'timecreated' => $int(),
            'timemodified' => $int(),
            'description' => $text,
        ],
        'indexes' => [['fields' => ['course']], ['fields' => ['tooldomain']], ['fields' => ['clientid'], 'unique' => true]],
    ],
    'lti_types_config' => [
        'fields' => [
            'id' => $id, 'typeid' => ['type' => 'int', 'notnull' => true],
            'name' => ['type' => 'char', 'length' => 100, 'notnull' => true, 'default' => ''],
            'value' => ['type' => 'text', 'notnull' => true],
        ],
        'indexes' => [['fields' => ['typeid']]],
    ],
];
