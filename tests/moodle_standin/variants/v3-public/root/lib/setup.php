<?php
// TEST STAND-IN for Moodle 5.1's <root>/lib/setup.php shim -- NOT Moodle code.
// Lets a config.php at the code root keep its usual last line,
//   require_once(__DIR__ . '/lib/setup.php');
// while the real bootstrap lives in public/lib/setup.php.

require_once(__DIR__ . '/../public/lib/setup.php');
