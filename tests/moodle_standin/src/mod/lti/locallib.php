<?php
// TEST STAND-IN for mod/lti/locallib.php -- NOT Moodle code.
// The tool-type API a deployment uses to register an LTI 1.1 external tool, with
// Moodle's function names, arguments, constants, table columns and config names:
// $type carries lti_types columns (state, course, coursevisible, ...); $config carries
// "lti_"-prefixed settings. lti_typename, lti_toolurl, lti_description, lti_ltiversion,
// lti_clientid, lti_icon, lti_secureicon and lti_coursevisible go to columns of
// {lti_types}; every other lti_<name> is stored as a row (typeid, name, value) in
// {lti_types_config} -- e.g. resourcekey, password, sendname, sendemailaddr,
// acceptgrades, launchcontainer, coursevisible, customparameters, forcessl, servicesalt.

defined('MOODLE_INTERNAL') || die();

require_once(__DIR__ . '/lib.php');

define('LTI_URL_DOMAIN_REGEX', '/(?:https?:\/\/)?(?:www\.)?([^\/]+)(?:\/|$)/i');

define('LTI_LAUNCH_CONTAINER_DEFAULT', 1);
define('LTI_LAUNCH_CONTAINER_EMBED', 2);
define('LTI_LAUNCH_CONTAINER_EMBED_NO_BLOCKS', 3);
define('LTI_LAUNCH_CONTAINER_WINDOW', 4);
define('LTI_LAUNCH_CONTAINER_REPLACE_MOODLE_WINDOW', 5);

define('LTI_TOOL_STATE_ANY', 0);
define('LTI_TOOL_STATE_CONFIGURED', 1);
define('LTI_TOOL_STATE_PENDING', 2);
define('LTI_TOOL_STATE_REJECTED', 3);
define('LTI_TOOL_PROXY_TAB', 4);

define('LTI_SETTING_NEVER', 0);
define('LTI_SETTING_ALWAYS', 1);
define('LTI_SETTING_DELEGATE', 2);

define('LTI_COURSEVISIBLE_NO', 0);
define('LTI_COURSEVISIBLE_PRECONFIGURED', 1);
define('LTI_COURSEVISIBLE_ACTIVITYCHOOSER', 2);

define('LTI_VERSION_1', 'LTI-1p0');
define('LTI_VERSION_2', 'LTI-2p0');
define('LTI_VERSION_1P3', '1.3.0');

/**
 * The host part of a tool URL ("https://hub.example.org/hub/lti/launch" gives
 * "hub.example.org"), which is what {lti_types}.tooldomain holds.
 */
function lti_get_domain_from_url($url) {
    if (preg_match(LTI_URL_DOMAIN_REGEX, (string)$url, $matches)) {
        return $matches[1];
    }
    return null;
}

/**
 * Moves the column settings from $config to $type before a save.
 */
function lti_prepare_type_for_save($type, $config) {
    if (isset($config->lti_toolurl)) {
        $type->baseurl = $config->lti_toolurl;
        $type->tooldomain = lti_get_domain_from_url($config->lti_toolurl);
    }
    if (isset($config->lti_description)) {
        $type->description = $config->lti_description;
    }
    if (isset($config->lti_typename)) {
        $type->name = $config->lti_typename;
    }
    if (isset($config->lti_ltiversion)) {
        $type->ltiversion = $config->lti_ltiversion;
    }
    if (isset($config->lti_clientid)) {
        $type->clientid = $config->lti_clientid;
    }
    if (!empty($type->ltiversion) && $type->ltiversion === LTI_VERSION_1P3 && empty($type->clientid)) {
        $type->clientid = random_string(15);
    } else if (empty($type->clientid)) {
        $type->clientid = null;
    }
    if (isset($config->lti_coursevisible)) {
        $type->coursevisible = $config->lti_coursevisible;
    }
    if (isset($config->lti_icon)) {
        $type->icon = $config->lti_icon;
    }
    if (isset($config->lti_secureicon)) {
        $type->secureicon = $config->lti_secureicon;
    }
    $type->forcessl = !empty($config->lti_forcessl) ? $config->lti_forcessl : 0;
    $config->lti_forcessl = $type->forcessl;
    if (isset($config->lti_contentitem)) {
        $type->contentitem = !empty($config->lti_contentitem) ? $config->lti_contentitem : 0;
        $config->lti_contentitem = $type->contentitem;
    }
    $type->timemodified = time();

    unset($config->lti_typename, $config->lti_toolurl, $config->lti_description, $config->lti_ltiversion,
        $config->lti_clientid, $config->lti_icon, $config->lti_secureicon);
}

/**
 * Stores the lti_* (and ltiservice_*) settings of $config for a type.
 */
function lti_standin_save_config(int $typeid, $config, bool $update): void {
    foreach ((array)$config as $key => $value) {
        if ($value === null) {
            continue;
        }
        if (str_starts_with($key, 'lti_')) {
            $name = substr($key, 4);
        } else if (str_starts_with($key, 'ltiservice_')) {
            $name = $key;
        } else {
            continue;
        }
        $record = (object)['typeid' => $typeid, 'name' => $name, 'value' => $value];
        $update ? lti_update_config($record) : lti_add_config($record);
    }
}

/**
 * Adds a tool type. Defaults as in Moodle: state pending, LTI 1.0/1.1, created by the
 * current user, in the site course. Returns the new type id.
 *
 * @param object $type   lti_types fields
 * @param object $config lti_* settings
 * @return int
 */
function lti_add_type($type, $config) {
    global $USER, $SITE, $DB;

    lti_prepare_type_for_save($type, $config);

    if (!isset($type->state)) {
        $type->state = LTI_TOOL_STATE_PENDING;
    }
    if (!isset($type->ltiversion)) {
        $type->ltiversion = LTI_VERSION_1;
    }
    if (!isset($type->timecreated)) {
        $type->timecreated = time();
    }
    if (!isset($type->createdby)) {
        $type->createdby = $USER->id;
    }
    if (!isset($type->course)) {
        $type->course = $SITE->id;
    }

    // A salt for signing data sent to extension services, as Moodle does.
    $config->lti_servicesalt = uniqid('', true);

    $id = $DB->insert_record('lti_types', $type);
    if ($id) {
        lti_standin_save_config($id, $config, false);
    }
    return $id;
}

/**
 * Updates a tool type ($type->id must be set) and its settings.
 *
 * @param object $type
 * @param object $config
 */
function lti_update_type($type, $config) {
    global $DB;

    lti_prepare_type_for_save($type, $config);
    unset($config->oldicon);

    if ($DB->update_record('lti_types', $type)) {
        lti_standin_save_config((int)$type->id, $config, true);
    }
}

function lti_add_config($config) {
    global $DB;

    return $DB->insert_record('lti_types_config', $config);
}

function lti_update_config($config) {
    global $DB;

    $old = $DB->get_record('lti_types_config', ['typeid' => $config->typeid, 'name' => $config->name]);
    if ($old) {
        $config->id = $old->id;
        return $DB->update_record('lti_types_config', $config);
    }
    return $DB->insert_record('lti_types_config', $config);
}

/**
 * The settings of a type as name => value, plus toolurl, icon and secureicon from
 * {lti_types} -- the same array Moodle returns.
 *
 * @param int $typeid
 * @return array
 */
function lti_get_type_config($typeid) {
    global $DB;

    $typeconfig = [];
    foreach ($DB->get_records('lti_types_config', ['typeid' => $typeid], 'id') as $config) {
        $typeconfig[$config->name] = $config->value;
    }
    $type = $DB->get_record('lti_types', ['id' => $typeid]);
    if ($type) {
        $typeconfig['toolurl'] = $type->baseurl;
        $typeconfig['icon'] = $type->icon;
        $typeconfig['secureicon'] = $type->secureicon;
    }
    return $typeconfig;
}

function lti_get_type($typeid) {
    global $DB;

    return $DB->get_record('lti_types', ['id' => $typeid]);
}

/**
 * Tool types whose tooldomain matches, optionally in one state, for the site and
 * (if given) one course.
 */
function lti_get_tools_by_domain($domain, $state = null, $courseid = null) {
    global $DB, $SITE;

    $sql = "SELECT * FROM {lti_types} WHERE tooldomain = ?";
    $params = [$domain];
    if ($state) {
        $sql .= " AND state = ?";
        $params[] = $state;
    }
    if ($courseid && $courseid != $SITE->id) {
        $sql .= " AND (course = ? OR course = ?)";
        array_push($params, $SITE->id, $courseid);
    } else {
        $sql .= " AND course = ?";
        $params[] = $SITE->id;
    }
    return $DB->get_records_sql($sql, $params);
}

function lti_delete_type($id) {
    global $DB;

    $DB->delete_records('lti_types_config', ['typeid' => $id]);
    $DB->delete_records('lti_types', ['id' => $id]);
}
