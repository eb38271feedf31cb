<?php
// TEST STAND-IN for Moodle's user/lib.php -- NOT Moodle code. user_create_user() only.

defined('MOODLE_INTERNAL') || die();

/**
 * Creates a user like Moodle's user_create_user(): username lower case and unique per
 * mnethostid, confirmed, timecreated; the password hashed when $updatepassword, else
 * stored as given (AUTH_PASSWORD_NOT_CACHED for accounts without a password). Returns the id.
 */
function user_create_user($user, bool $updatepassword = true, bool $triggerevent = true): int {
    global $CFG, $DB;
    $user = (object)$user;
    if (empty($user->username) || $user->username !== strtolower($user->username)) {
        throw new moodle_exception('invalidusername');
    }
    $user->mnethostid = $user->mnethostid ?? ($CFG->mnet_localhost_id ?? 1);
    if ($DB->record_exists('user', ['username' => $user->username, 'mnethostid' => $user->mnethostid])) {
        throw new moodle_exception('invalidusername');
    }
    $user->auth = $user->auth ?? 'manual';
    $user->confirmed = $user->confirmed ?? 1;
    if ($updatepassword && isset($user->password)) {
        $user->password = password_hash((string)$user->password, PASSWORD_DEFAULT);
    } else if (!isset($user->password)) {
        $user->password = AUTH_PASSWORD_NOT_CACHED;
    }
    $user->timecreated = $user->timemodified = time();
    return $DB->insert_record('user', $user);
}
