<?php
// TEST STAND-IN for Moodle's lib/accesslib.php -- NOT Moodle code.
// Only the system context and what setting up a web-service account needs: roles,
// capabilities granted to a role at system level, role assignments, has_capability().
// Function names, arguments and tables follow Moodle's; no caching, no overrides below
// the system context, no archetypes.

defined('MOODLE_INTERNAL') || die();

const CONTEXT_SYSTEM = 10;
const CONTEXT_USER = 30;
const CONTEXT_COURSECAT = 40;
const CONTEXT_COURSE = 50;
const CONTEXT_MODULE = 70;
const CONTEXT_BLOCK = 80;

const CAP_INHERIT = 0;
const CAP_ALLOW = 1;
const CAP_PREVENT = -1;
const CAP_PROHIBIT = -1000;

const RISK_MANAGETRUST = 0x0001;
const RISK_CONFIG = 0x0002;
const RISK_XSS = 0x0004;
const RISK_PERSONAL = 0x0008;
const RISK_SPAM = 0x0010;
const RISK_DATALOSS = 0x0020;

/** Moodle's context_system (an alias of \core\context\system): the one context row of level 10. */
class context_system {
    public int $id;
    public int $contextlevel = CONTEXT_SYSTEM;
    public int $instanceid = 0;
    public string $path;

    private function __construct(stdClass $record) {
        $this->id = (int)$record->id;
        $this->path = (string)$record->path;
    }

    public static function instance(int $instanceid = 0, int $strictness = MUST_EXIST): self {
        global $DB;
        $record = $DB->get_record('context', ['contextlevel' => CONTEXT_SYSTEM, 'instanceid' => 0]);
        if (!$record) {
            $id = $DB->insert_record('context', ['contextlevel' => CONTEXT_SYSTEM, 'instanceid' => 0,
                'path' => '', 'depth' => 1, 'locked' => 0]);
            $DB->set_field('context', 'path', '/' . $id, ['id' => $id]);
            $record = $DB->get_record('context', ['id' => $id], '*', MUST_EXIST);
        }
        return new self($record);
    }
}

/** A capability's definition (capabilities table), or null when no component defines it. */
function get_capability_info(string $capabilityname): ?stdClass {
    global $DB;
    return $DB->get_record('capabilities', ['name' => $capabilityname]) ?: null;
}

function create_role(string $name, string $shortname, string $description, string $archetype = ''): int {
    global $DB;
    if ($DB->record_exists('role', ['shortname' => $shortname])) {
        throw new moodle_exception('shortnametaken', 'core_role', '', $shortname);
    }
    $sortorder = (int)$DB->get_field_sql('SELECT MAX(sortorder) FROM {role}') + 1;
    return $DB->insert_record('role', ['name' => $name, 'shortname' => $shortname, 'description' => $description,
        'sortorder' => $sortorder, 'archetype' => $archetype]);
}

function get_role_contextlevels(int $roleid): array {
    global $DB;
    $levels = [];
    foreach ($DB->get_records('role_context_levels', ['roleid' => $roleid]) as $row) {
        $levels[(int)$row->contextlevel] = (int)$row->contextlevel;
    }
    return $levels;
}

function set_role_contextlevels(int $roleid, array $contextlevels): void {
    global $DB;
    $DB->delete_records('role_context_levels', ['roleid' => $roleid]);
    foreach ($contextlevels as $level) {
        $DB->insert_record('role_context_levels', ['roleid' => $roleid, 'contextlevel' => (int)$level]);
    }
}

function assign_capability(string $capability, int $permission, int $roleid, $contextid, bool $overwrite = false): bool {
    global $DB, $USER;
    if (!get_capability_info($capability)) {
        throw new coding_exception("Capability '$capability' was not found! This has to be fixed in code.");
    }
    $contextid = is_object($contextid) ? (int)$contextid->id : (int)$contextid;
    $existing = $DB->get_record('role_capabilities', ['contextid' => $contextid, 'roleid' => $roleid, 'capability' => $capability]);
    if ($existing && !$overwrite) {
        return true;
    }
    $row = ['contextid' => $contextid, 'roleid' => $roleid, 'capability' => $capability, 'permission' => $permission,
        'timemodified' => time(), 'modifierid' => (int)($USER->id ?? 0)];
    if ($existing) {
        $DB->update_record('role_capabilities', ['id' => $existing->id] + $row);
    } else {
        $DB->insert_record('role_capabilities', $row);
    }
    return true;
}

function unassign_capability(string $capability, int $roleid, $contextid = null): bool {
    global $DB;
    $conditions = ['capability' => $capability, 'roleid' => $roleid];
    if ($contextid !== null) {
        $conditions['contextid'] = is_object($contextid) ? (int)$contextid->id : (int)$contextid;
    }
    $DB->delete_records('role_capabilities', $conditions);
    return true;
}

function role_assign(int $roleid, int $userid, $contextid, string $component = '', int $itemid = 0): int {
    global $DB, $USER;
    $contextid = is_object($contextid) ? (int)$contextid->id : (int)$contextid;
    $existing = $DB->get_record('role_assignments', ['roleid' => $roleid, 'userid' => $userid,
        'contextid' => $contextid, 'component' => $component, 'itemid' => $itemid]);
    if ($existing) {
        return (int)$existing->id;
    }
    return $DB->insert_record('role_assignments', ['roleid' => $roleid, 'contextid' => $contextid, 'userid' => $userid,
        'timemodified' => time(), 'modifierid' => (int)($USER->id ?? 0), 'component' => $component, 'itemid' => $itemid]);
}

function user_has_role_assignment(int $userid, int $roleid, int $contextid = 0): bool {
    global $DB;
    $conditions = ['userid' => $userid, 'roleid' => $roleid];
    if ($contextid) {
        $conditions['contextid'] = $contextid;
    }
    return $DB->record_exists('role_assignments', $conditions);
}

/**
 * Site admins have every capability; anyone else needs a role assigned in the system
 * context that allows it there, and no role of theirs that prohibits it.
 */
function has_capability(string $capability, $context, $user = null, bool $doanything = true): bool {
    global $DB, $USER;
    $userid = is_object($user) ? (int)$user->id : (int)($user ?? ($USER->id ?? 0));
    if ($userid <= 0) {
        return false;
    }
    if ($doanything && is_siteadmin($userid)) {
        return true;
    }
    $system = context_system::instance();
    $permissions = $DB->get_records_sql(
        'SELECT rc.id, rc.permission FROM {role_capabilities} rc
           JOIN {role_assignments} ra ON ra.roleid = rc.roleid AND ra.contextid = ?
          WHERE ra.userid = ? AND rc.contextid = ? AND rc.capability = ?',
        [$system->id, $userid, $system->id, $capability]
    );
    $allowed = false;
    foreach ($permissions as $row) {
        if ((int)$row->permission === CAP_PROHIBIT) {
            return false;
        }
        $allowed = $allowed || (int)$row->permission === CAP_ALLOW;
    }
    return $allowed;
}

if (!class_exists('coding_exception')) {
    class coding_exception extends moodle_exception {
        public function __construct(string $hint, ?string $debuginfo = null) {
            parent::__construct('codingerror', 'debug', '', $hint, $debuginfo);
        }
    }
}
