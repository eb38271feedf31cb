<?php
// Managed by Ansible (role moodle_webservice).
//
// Sets up, through Moodle's own APIs, what the hubs' learning-log proxy needs in Moodle:
// web services and the REST protocol on; a service account that can log in nowhere (auth
// "webservice"); a role of its own, assignable at system level only, that allows exactly
// the wanted capabilities (webservice/rest:use, mod/lticontainer:db_write) and nothing
// else, assigned to that account in the system context; the account authorised on the
// module's service (shortname mod_lticontainer, restricted users) and on no other; and one
// permanent token for it and that service, whose value comes from the controller.
// Moodle's API has no way to create a token with a given value: the token is created by
// \core_external\util::generate_token() (capability check, private token, context,
// creator) and then given the controller's value. Other tokens of the account are deleted.
//
// Input, JSON on standard input (the token never shows in a process list):
//   {"token": "<32 hex>", "service": "mod_lticontainer", "protocol": "rest",
//    "capabilities": ["webservice/rest:use", "mod/lticontainer:db_write"],
//    "user": {"username": "...", "firstname": "...", "lastname": "...", "email": "..."},
//    "role": {"shortname": "...", "name": "...", "description": "..."}}
// Prints {"changed": bool, "actions": [...], "userid": n, "serviceid": n}, never the token.
// Exit codes: 0 done, 2 bad usage or input, 3 Moodle lacks the module's service or a capability.
//
// Usage (as the web user): php webservice.php --config=/path/to/moodle/config.php < wanted.json

define('CLI_SCRIPT', true);

$options = getopt('', ['config:']);
if (empty($options['config']) || !is_readable($options['config'])) {
    fwrite(STDERR, "usage: webservice.php --config=/path/to/moodle/config.php < wanted.json\n");
    exit(2);
}
require($options['config']);
require_once($CFG->dirroot . '/user/lib.php');
require_once($CFG->dirroot . '/webservice/lib.php');

function mjp_ws_fail(int $code, string $message): void {
    fwrite(STDERR, "webservice.php: $message\n");
    exit($code);
}

try {
    $wanted = json_decode(stream_get_contents(STDIN), true, 8, JSON_THROW_ON_ERROR);
} catch (JsonException $e) {
    mjp_ws_fail(2, 'standard input is not the JSON of the wanted set-up: ' . $e->getMessage());
}
$token = (string)($wanted['token'] ?? '');
$protocol = (string)($wanted['protocol'] ?? 'rest');
$capabilities = array_values(array_map('strval', (array)($wanted['capabilities'] ?? [])));
$wanteduser = (array)($wanted['user'] ?? []);
$wantedrole = (array)($wanted['role'] ?? []);
if (!preg_match('/^[A-Za-z0-9]{32,128}$/', $token)) {
    mjp_ws_fail(2, 'the token must be 32 to 128 letters and digits (Moodle reads wstoken as PARAM_ALPHANUM)');
}
if (!preg_match('/^[a-z]+$/', $protocol) || !$capabilities
        || !preg_match('/^[a-z0-9_.@-]+$/', (string)($wanteduser['username'] ?? ''))
        || !preg_match('/^[a-z0-9_]+$/', (string)($wantedrole['shortname'] ?? ''))
        || (string)($wanted['service'] ?? '') === '') {
    mjp_ws_fail(2, 'the input needs service, protocol, capabilities, user.username (lower case) and role.shortname');
}

\core\session\manager::set_user(get_admin());
$system = context_system::instance();
$actions = [];

// What must exist already: the module's service and every capability (a missing one
// means mod_lticontainer, or the protocol plugin, is not installed).
foreach ($capabilities as $capability) {
    if (!get_capability_info($capability)) {
        mjp_ws_fail(3, "Moodle does not know the capability $capability (is its plugin installed?)");
    }
}
$service = $DB->get_record('external_services', ['shortname' => (string)$wanted['service']]);
if (!$service) {
    mjp_ws_fail(3, "Moodle has no web service with the short name {$wanted['service']} (is mod_lticontainer installed?)");
}
if ((int)$service->enabled !== 1 || (int)$service->restrictedusers !== 1) {
    $service->enabled = 1;
    $service->restrictedusers = 1;
    $service->timemodified = time();
    $DB->update_record('external_services', $service);
    $actions[] = 'service enabled for authorised users only';
}

// Web services and the protocol.
if (empty($CFG->enablewebservices)) {
    set_config('enablewebservices', 1);
    $actions[] = 'web services enabled';
}
$protocols = array_values(array_filter(explode(',', (string)($CFG->webserviceprotocols ?? ''))));
if (!in_array($protocol, $protocols, true)) {
    $protocols[] = $protocol;
    set_config('webserviceprotocols', implode(',', $protocols));
    $actions[] = "protocol $protocol enabled";
}

// The account: web-service authentication only (no password, no web login), active.
$mnethostid = (int)($CFG->mnet_localhost_id ?? 1);
$user = $DB->get_record('user', ['username' => $wanteduser['username'], 'mnethostid' => $mnethostid, 'deleted' => 0]);
if (!$user) {
    $userid = user_create_user((object)[
        'username' => $wanteduser['username'], 'auth' => 'webservice', 'confirmed' => 1, 'mnethostid' => $mnethostid,
        'password' => AUTH_PASSWORD_NOT_CACHED, 'firstname' => (string)($wanteduser['firstname'] ?? 'Learning log'),
        'lastname' => (string)($wanteduser['lastname'] ?? 'proxy'), 'email' => (string)($wanteduser['email'] ?? ''),
    ], false, false);
    $user = $DB->get_record('user', ['id' => $userid], '*', MUST_EXIST);
    $actions[] = 'account created';
} else if ($user->auth !== 'webservice' || (int)$user->suspended !== 0 || (int)$user->confirmed !== 1) {
    $DB->update_record('user', ['id' => $user->id, 'auth' => 'webservice', 'suspended' => 0, 'confirmed' => 1,
        'timemodified' => time()]);
    $actions[] = 'account reset to web-service login, active';
}
$userid = (int)$user->id;

// Its role: system level only, exactly the wanted capabilities.
$role = $DB->get_record('role', ['shortname' => $wantedrole['shortname']]);
if (!$role) {
    $roleid = create_role((string)($wantedrole['name'] ?? $wantedrole['shortname']), $wantedrole['shortname'],
        (string)($wantedrole['description'] ?? ''));
    $actions[] = 'role created';
} else {
    $roleid = (int)$role->id;
}
if (array_values(get_role_contextlevels($roleid)) !== [CONTEXT_SYSTEM]) {
    set_role_contextlevels($roleid, [CONTEXT_SYSTEM]);
    $actions[] = 'role limited to the system context';
}
$granted = [];
foreach ($DB->get_records('role_capabilities', ['roleid' => $roleid]) as $row) {
    if ((int)$row->contextid === (int)$system->id && (int)$row->permission === CAP_ALLOW
            && in_array($row->capability, $capabilities, true)) {
        $granted[$row->capability] = true;
    } else {
        unassign_capability($row->capability, $roleid, (int)$row->contextid);
        $actions[] = "role capability removed: {$row->capability}";
    }
}
foreach ($capabilities as $capability) {
    if (empty($granted[$capability])) {
        assign_capability($capability, CAP_ALLOW, $roleid, $system->id, true);
        $actions[] = "role capability allowed: $capability";
    }
}
if (!user_has_role_assignment($userid, $roleid, (int)$system->id)) {
    role_assign($roleid, $userid, $system->id);
    $actions[] = 'role assigned in the system context';
}

// Authorised on the module's service, and on no other.
$ws = new webservice();
$authorised = false;
foreach ($DB->get_records('external_services_users', ['userid' => $userid]) as $row) {
    if ((int)$row->externalserviceid === (int)$service->id && empty($row->validuntil) && empty($row->iprestriction)
            && !$authorised) {
        $authorised = true;
        continue;
    }
    $DB->delete_records('external_services_users', ['id' => $row->id]);
    $actions[] = 'authorisation removed from another service';
}
if (!$authorised) {
    $ws->add_ws_authorised_user((object)['externalserviceid' => (int)$service->id, 'userid' => $userid]);
    $actions[] = 'account authorised on the service';
}

// One permanent token: the controller's value, for this service, without expiry.
$found = false;
foreach ($DB->get_records('external_tokens', ['userid' => $userid]) as $row) {
    $ours = (int)$row->externalserviceid === (int)$service->id && (int)$row->tokentype === EXTERNAL_TOKEN_PERMANENT
        && empty($row->validuntil) && empty($row->iprestriction) && hash_equals((string)$row->token, $token);
    if ($ours && !$found) {
        $found = true;
        continue;
    }
    $DB->delete_records('external_tokens', ['id' => $row->id]);
    $actions[] = 'another token of the account deleted';
}
if (!$found) {
    if ($DB->record_exists('external_tokens', ['token' => $token])) {
        mjp_ws_fail(2, 'the wanted token value belongs to another Moodle account; choose another');
    }
    $generated = \core_external\util::generate_token(EXTERNAL_TOKEN_PERMANENT, $service, $userid, $system, 0, '');
    $DB->set_field('external_tokens', 'token', $token, ['token' => $generated]);
    $actions[] = 'token created';
}

echo json_encode(['changed' => (bool)$actions, 'actions' => $actions, 'userid' => $userid,
    'serviceid' => (int)$service->id]), "\n";
