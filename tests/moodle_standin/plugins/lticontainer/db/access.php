<?php
// TEST STAND-IN capabilities of the fake mod_lticontainer -- NOT the real plugin.
// Only the capability its web service is declared with (name, type, level and risks
// as the real plugin's db/access.php).

defined('MOODLE_INTERNAL') || die();

$capabilities = [
    'mod/lticontainer:db_write' => [
        'riskbitmask' => RISK_DATALOSS | RISK_SPAM,
        'captype' => 'write',
        'contextlevel' => CONTEXT_MODULE,
    ],
];
