<?php
// TEST STAND-IN for Moodle's webservice/lib.php -- NOT Moodle code.
// The webservice class's authorised-user methods, webservice_protocol_is_enabled(),
// the access exception and the token authentication every protocol server runs
// (same checks, same order and error codes as Moodle's webservice_server).

defined('MOODLE_INTERNAL') || die();

require_once($CFG->libdir . '/externallib.php');

class webservice_access_exception extends moodle_exception {
    public function __construct(string $debuginfo) {
        parent::__construct('accessexception', 'webservice', '', null, $debuginfo);
    }
}

/** Web services on and $protocol among the enabled ones ($CFG->webserviceprotocols). */
function webservice_protocol_is_enabled(string $protocol): bool {
    global $CFG;
    if (empty($CFG->enablewebservices) || empty($CFG->webserviceprotocols)) {
        return false;
    }
    return in_array($protocol, explode(',', (string)$CFG->webserviceprotocols), true);
}

class webservice {
    /** Allows a user to call a restricted service: {externalserviceid, userid[, iprestriction, validuntil]}. */
    public function add_ws_authorised_user($user): void {
        global $DB;
        $user = (object)$user;
        $user->timecreated = time();
        $DB->insert_record('external_services_users', $user);
    }

    public function remove_ws_authorised_user($user, int $serviceid): void {
        global $DB;
        $DB->delete_records('external_services_users', ['externalserviceid' => $serviceid, 'userid' => (int)$user->id]);
    }

    /**
     * Token authentication of a protocol server: returns [user, token, service] or throws
     * what Moodle throws (invalidtoken, accessexception ...).
     */
    public static function standin_authenticate_by_token(string $wstoken, string $protocol): array {
        global $DB;
        $token = $wstoken === '' ? false
            : $DB->get_record('external_tokens', ['token' => $wstoken, 'tokentype' => EXTERNAL_TOKEN_PERMANENT]);
        if (!$token) {
            throw new moodle_exception('invalidtoken', 'webservice');
        }
        if (!empty($token->validuntil) && (int)$token->validuntil < time()) {
            $DB->delete_records('external_tokens', ['token' => $token->token, 'tokentype' => EXTERNAL_TOKEN_PERMANENT]);
            throw new webservice_access_exception('Invalid token - token expired - check validuntil time for the token');
        }
        $user = $DB->get_record('user', ['id' => (int)$token->userid, 'deleted' => 0], '*', MUST_EXIST);
        \core\session\manager::set_user($user);
        $service = $DB->get_record('external_services', ['id' => (int)$token->externalserviceid, 'enabled' => 1]);
        if (!$service) {
            throw new webservice_access_exception('Web service is not available (it doesn\'t exist or might be disabled)');
        }
        if (!empty($service->requiredcapability) && !has_capability($service->requiredcapability, context_system::instance(), $user)) {
            throw new webservice_access_exception('The capability ' . $service->requiredcapability . ' is required.');
        }
        if (!empty($service->restrictedusers)) {
            $authorised = $DB->get_record('external_services_users', ['externalserviceid' => (int)$service->id, 'userid' => (int)$user->id]);
            if (!$authorised) {
                throw new webservice_access_exception(get_string('usernotallowed', 'webservice', $service->name));
            }
            if (!empty($authorised->validuntil) && (int)$authorised->validuntil < time()) {
                throw new webservice_access_exception('Invalid service - service expired - check validuntil time for this allowed user');
            }
        }
        if (empty($user->confirmed)) {
            throw new webservice_access_exception('User not confirmed: ' . $user->username);
        }
        if (!empty($user->suspended)) {
            throw new webservice_access_exception('Refused web service access for suspended username: ' . $user->username);
        }
        if ($user->auth === 'nologin') {
            throw new webservice_access_exception('Refused web service access for nologin authentication username: ' . $user->username);
        }
        if (!has_capability("webservice/$protocol:use", context_system::instance(), $user)) {
            throw new webservice_access_exception("You are not allowed to use the $protocol protocol (missing capability: webservice/$protocol:use)");
        }
        if (empty($token->lastaccess) || (int)$token->lastaccess < time() - 60) {
            $DB->set_field('external_tokens', 'lastaccess', time(), ['id' => (int)$token->id]);
        }
        return [$user, $token, $service];
    }
}
