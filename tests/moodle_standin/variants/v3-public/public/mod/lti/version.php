<?php
// TEST STAND-IN for mod_lti's version.php -- NOT Moodle code.

defined('MOODLE_INTERNAL') || die();

$plugin->version   = 2025100600;    // The current module version (Date: YYYYMMDDXX).
$plugin->requires  = 2025100100;    // Requires this Moodle version.
$plugin->component = 'mod_lti';     // Full name of the plugin (used for diagnostics).
