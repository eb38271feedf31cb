<?php
// TEST STAND-IN for Moodle's front page -- NOT Moodle code.
// Shows the site full name (from the database) and the release; starts the
// MoodleSession cookie and its session file in <dataroot>/sessions. Answers 503
// in maintenance (lib/setup.php) and redirects to admin/index.php while the
// database is not installed or not upgraded to this code.

require_once(__DIR__ . '/config.php');

redirect_if_major_upgrade_required();

if (!empty($CFG->maintenance_enabled) && !is_siteadmin()) {
    standin_send_status(503, 'Moodle under maintenance');
    standin_page(get_string('sitemaintenancetitle', 'admin', $SITE->fullname),
        '<p>' . s(get_string('sitemaintenance', 'admin')) . '</p>', 'page-maintenance');
    exit(0);
}

$_SESSION['standin_lastseen'] = time(); // Makes sure the session file gets written.

if (!empty($USER->id)) {
    $logininfo = s(get_string('loggedinas', 'moodle', $USER->username))
        . ' (<a href="' . s($CFG->wwwroot . '/login/logout.php') . '">' . s(get_string('logout')) . '</a>)';
} else {
    $logininfo = s(get_string('loggedinnot')) . ' (<a href="' . s($CFG->wwwroot . '/login/index.php') . '">'
        . s(get_string('login')) . '</a>)';
}

$body = '<header><h1 class="sitename">' . s($SITE->fullname) . "</h1></header>\n"
    . '<div class="logininfo">' . $logininfo . "</div>\n"
    . '<div class="summary">' . s($SITE->summary ?? '') . "</div>\n"
    . '<footer><div class="release">Moodle ' . s($CFG->release ?? '') . "</div></footer>";

standin_page($SITE->fullname, $body, 'page-site-index');
