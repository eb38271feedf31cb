<?php
// TEST STAND-IN for Moodle 5.1's public/config.php -- NOT Moodle code.
// The real configuration lives one level up, outside the web root: <root>/config.php.

$configfile = __DIR__ . '/../config.php';
if (!file_exists($configfile)) {
    header('Location: install.php');
    die;
}

require_once($configfile);
