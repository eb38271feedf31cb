<?php
// TEST STAND-IN for mod/lti/lib.php -- NOT Moodle code.

defined('MOODLE_INTERNAL') || die();

/**
 * Returns available Basic LTI types (all rows of {lti_types}), as Moodle's does.
 *
 * @return array of basicLTI types keyed by id
 */
function lti_get_lti_types() {
    global $DB;

    return $DB->get_records('lti_types', null, 'state DESC, timemodified DESC');
}
