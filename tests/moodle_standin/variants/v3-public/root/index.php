<?php
// TEST STAND-IN -- NOT Moodle code. Moodle 5.1+ serves the web site from <root>/public;
// reaching this file means the web server's document root points at the code root.

header(($_SERVER['SERVER_PROTOCOL'] ?? 'HTTP/1.1') . ' 500 Internal Server Error');
header('Content-Type: text/plain; charset=utf-8');
echo "Moodle stand-in: the web server document root must be the 'public' directory of this Moodle, not its root.\n";
exit(1);
