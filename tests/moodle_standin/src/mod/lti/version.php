<?php
// TEST STAND-IN for mod_lti's version.php -- NOT Moodle code.

defined('MOODLE_INTERNAL') || die();

$plugin->version   = 2024100700;    // The current module version (Date: YYYYMMDDXX).
$plugin->requires  = 2024100100;    // Requires this Moodle version.
$plugin->component = 'mod_lti';     // Full name of the plugin (used for diagnostics).
