<?php  // Moodle configuration file -- TEST STAND-IN sample, NOT Moodle's config-dist.php.
// Copy to config.php and edit. Same keys as Moodle's config.php.

unset($CFG);
global $CFG;
$CFG = new stdClass();

$CFG->dbtype    = 'mariadb';      // 'mariadb', 'mysqli' or 'pgsql'
$CFG->dblibrary = 'native';
$CFG->dbhost    = 'localhost';
$CFG->dbname    = 'moodle';
$CFG->dbuser    = 'moodle';
$CFG->dbpass    = 'password';
$CFG->prefix    = 'mdl_';
$CFG->dboptions = [
    'dbpersist' => false,
    'dbsocket'  => '',            // Path of a unix socket, or '' for TCP / the default socket.
    'dbport'    => '',
    'dbcollation' => 'utf8mb4_unicode_ci',
];

$CFG->wwwroot   = 'http://example.com/moodle';
$CFG->dataroot  = '/var/moodledata';
$CFG->admin     = 'admin';
$CFG->directorypermissions = 02770;
// $CFG->sslproxy = true;        // TLS ends at a proxy in front of the web server.
// $CFG->reverseproxy = true;    // Only when the proxy rewrites the host name.

require_once(__DIR__ . '/lib/setup.php');

// There is no php closing tag in this file,
// it is intentional because it prevents trailing whitespace problems!
