<?php
// TEST STAND-IN web service of the fake mod_lticontainer -- NOT the real plugin.
// The function and service the learning-log proxy calls, named as in the real plugin:
// function mod_lticontainer_write_nblogs in service "JupyterHub Notebook Logs"
// (shortname mod_lticontainer), restricted to authorised users, enabled.

defined('MOODLE_INTERNAL') || die();

$functions = [
    'mod_lticontainer_write_nblogs' => [
        'classname' => 'mod_lticontainer_external',
        'methodname' => 'write_nblogs',
        'classpath' => 'mod/lticontainer/externallib.php',
        'description' => 'Stores one learning-log record of a notebook (stand-in)',
        'type' => 'write',
        'capabilities' => 'mod/lticontainer:db_write',
    ],
];

$services = [
    'JupyterHub Notebook Logs' => [
        'functions' => ['mod_lticontainer_write_nblogs'],
        'restrictedusers' => 1,
        'enabled' => 1,
        'shortname' => 'mod_lticontainer',
    ],
];
