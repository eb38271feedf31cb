<?php
// TEST STAND-IN for the mod_lticontainer plugin -- NOT the real plugin.
// Gives install/upgrade a third-party activity module to register in config_plugins.

defined('MOODLE_INTERNAL') || die();

$plugin->component = 'mod_lticontainer';
$plugin->version   = 2025052600;
$plugin->requires  = 2022112800;            // Moodle 4.1.
$plugin->maturity  = MATURITY_STABLE;
$plugin->release   = '1.6.0 (stand-in)';
