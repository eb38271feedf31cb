<?php
// TEST STAND-IN for Moodle's admin/index.php -- NOT Moodle code.
// Where the front page sends visitors while the database is not installed or not
// upgraded to the code. The stand-in installs and upgrades from the CLI only.

require_once(__DIR__ . '/../config.php');

$code = standin_code_version();
if (empty($CFG->version)) {
    standin_page('Installation', '<h2>Installation</h2><p>Moodle ' . s($code['release'])
        . ' is not installed yet. Run admin/cli/install_database.php.</p>', 'page-admin-install');
} else if ((float)$CFG->version > $code['version']) {
    throw new moodle_exception('downgradedcore', 'error');
} else if (moodle_needs_upgrading()) {
    standin_page('Upgrade', '<h2>Upgrade pending</h2><p>Database: ' . s(($CFG->release ?? '') . " ($CFG->version)")
        . '</p><p>Code: ' . s($code['release'] . ' (' . $code['version'] . ')')
        . '</p><p>Run admin/cli/upgrade.php --non-interactive.</p>', 'page-admin-upgrade');
} else {
    standin_page('Site administration', '<h2>Site administration</h2><p>Moodle ' . s($CFG->release ?? '')
        . '</p>', 'page-admin-index');
}
