<?php
// TEST STAND-IN for Moodle's login/logout.php -- NOT Moodle code.

require_once(__DIR__ . '/../config.php');

$_SESSION = [];
session_destroy();
redirect($CFG->wwwroot . '/');
