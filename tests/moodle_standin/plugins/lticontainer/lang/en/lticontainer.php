<?php
// TEST STAND-IN strings for the fake mod_lticontainer -- NOT the real plugin.

$string['modulename'] = 'LTI Container (stand-in)';
$string['pluginname'] = 'LTI Container (stand-in)';
