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
    // The learning-log tables the module's web service writes (names and columns as the
    // real plugin's db/install.xml).
    'lticontainer_server_data' => [
        'fields' => [
            'id' => ['type' => 'int', 'sequence' => true],
            'session' => ['type' => 'char', 'length' => 42, 'notnull' => true, 'default' => ''],
            'message' => ['type' => 'char', 'length' => 42, 'notnull' => true, 'default' => ''],
            'status' => ['type' => 'char', 'length' => 32, 'notnull' => false],
            'username' => ['type' => 'char', 'length' => 32, 'notnull' => false],
            'date' => ['type' => 'char', 'length' => 32, 'notnull' => true, 'default' => '0'],
            'updatetm' => ['type' => 'int', 'notnull' => true, 'default' => 0],
        ],
        'indexes' => [['fields' => ['session']], ['fields' => ['message']]],
    ],
    'lticontainer_client_data' => [
        'fields' => [
            'id' => ['type' => 'int', 'sequence' => true],
            'session' => ['type' => 'char', 'length' => 42, 'notnull' => true, 'default' => ''],
            'message' => ['type' => 'char', 'length' => 42, 'notnull' => true, 'default' => ''],
            'cell_id' => ['type' => 'char', 'length' => 42, 'notnull' => false],
            'filename' => ['type' => 'char', 'length' => 255, 'notnull' => false],
            'date' => ['type' => 'char', 'length' => 32, 'notnull' => true, 'default' => '0'],
            'updatetm' => ['type' => 'int', 'notnull' => true, 'default' => 0],
        ],
        'indexes' => [['fields' => ['session']], ['fields' => ['message']]],
    ],
    'lticontainer_session' => [
        'fields' => [
            'id' => ['type' => 'int', 'sequence' => true],
            'session' => ['type' => 'char', 'length' => 42, 'notnull' => true, 'default' => ''],
            'course' => ['type' => 'int', 'notnull' => true, 'default' => 0],
            'inst_id' => ['type' => 'int', 'notnull' => true, 'default' => 0],
            'lti_id' => ['type' => 'int', 'notnull' => true, 'default' => 0],
            'updatetm' => ['type' => 'int', 'notnull' => true, 'default' => 0],
        ],
        'indexes' => [['fields' => ['session']]],
    ],
    'lticontainer_tags' => [
        'fields' => [
            'id' => ['type' => 'int', 'sequence' => true],
            'cell_id' => ['type' => 'char', 'length' => 42, 'notnull' => true, 'default' => ''],
            'tags' => ['type' => 'text', 'notnull' => true],
            'filename' => ['type' => 'char', 'length' => 255, 'notnull' => false],
            'codenum' => ['type' => 'char', 'length' => 12, 'notnull' => false],
            'updatetm' => ['type' => 'int', 'notnull' => true, 'default' => 0],
        ],
        'indexes' => [['fields' => ['cell_id', 'filename'], 'unique' => true]],
    ],
];
