<?php
// TEST STAND-IN schema for the fake mod_lticontainer -- NOT the real plugin.

defined('MOODLE_INTERNAL') || die();

return [
    'lticontainer' => [
        'fields' => [
            'id' => ['type' => 'int', 'sequence' => true],
            'course' => ['type' => 'int', 'notnull' => true, 'default' => 0],
            'name' => ['type' => 'char', 'length' => 255, 'notnull' => true, 'default' => ''],
            'docker_host' => ['type' => 'char', 'length' => 255, 'notnull' => true, 'default' => ''],
            'use_podman' => ['type' => 'int', 'notnull' => true, 'default' => 0],
            'timecreated' => ['type' => 'int', 'notnull' => true, 'default' => 0],
            'timemodified' => ['type' => 'int', 'notnull' => true, 'default' => 0],
        ],
        'indexes' => [['fields' => ['course']]],
    ],
];
