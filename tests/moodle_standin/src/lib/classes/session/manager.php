<?php
// TEST STAND-IN for \core\session\manager -- NOT Moodle code. Only what CLI scripts
// that bootstrap Moodle typically call: set_user(get_admin()) before using an API.

namespace core\session;

defined('MOODLE_INTERNAL') || die();

class manager {
    /** Makes $user the current user ($USER), like Moodle's manager::set_user(). */
    public static function set_user(\stdClass $user): void {
        global $USER;
        $USER = $user;
    }

    /** Starts with the "not logged in" user (id 0), as every CLI script does. */
    public static function init_empty_session(): void {
        global $USER, $SESSION;
        $USER = (object)['id' => 0, 'username' => '', 'mnethostid' => 1];
        $SESSION = new \stdClass();
    }
}
