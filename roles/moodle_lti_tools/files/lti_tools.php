<?php
// Managed by Ansible (role moodle_lti_tools).
//
// Create, update or disable the LTI 1.1 external tool types of the JupyterHub hubs
// through Moodle's own mod_lti API (mod/lti/locallib.php), as Moodle's admin would.
// The wanted tools come as JSON on standard input, so secrets never show in a process
// list:  {"prefix": "JupyterHub", "launchcontainer": 4,
//         "tools": [{"hub": "hub1", "url": "https://...", "key": "...", "secret": "..."}]}
// Tools this script made earlier for hubs no longer listed are disabled (pending and
// hidden from the activity chooser), never deleted: course activities keep them.
// Prints {"changed": bool, "tools": [{"hub", "id", "action"}]} and nothing secret.
//
// Usage: php lti_tools.php --config=/path/to/moodle/config.php < wanted.json

define('CLI_SCRIPT', true);

$options = getopt('', ['config:']);
if (empty($options['config']) || !is_readable($options['config'])) {
    fwrite(STDERR, "usage: lti_tools.php --config=/path/to/moodle/config.php < wanted.json\n");
    exit(2);
}
require($options['config']);
require_once($CFG->dirroot . '/mod/lti/locallib.php');

// The config entry that marks a tool type as ours, with the hub's name as its value.
const MJP_MARKER = 'mjphub';

try {
    $wanted = json_decode(stream_get_contents(STDIN), true, 8, JSON_THROW_ON_ERROR);
} catch (JsonException $e) {
    fwrite(STDERR, "lti_tools.php: standard input is not the JSON list of tools: {$e->getMessage()}\n");
    exit(2);
}

\core\session\manager::set_user(get_admin());

/** The settings Moodle's admin form would save for one hub's tool. */
function mjp_tool_config(array $tool, string $prefix, int $container): stdClass {
    return (object)[
        'lti_typename' => trim("$prefix {$tool['hub']}"),
        'lti_toolurl' => $tool['url'],
        'lti_description' => 'JupyterLab for programming classes (mod_lticontainer)',
        'lti_ltiversion' => LTI_VERSION_1,
        'lti_resourcekey' => $tool['key'],
        'lti_password' => $tool['secret'],
        'lti_sendname' => LTI_SETTING_ALWAYS,
        'lti_sendemailaddr' => LTI_SETTING_ALWAYS,
        'lti_acceptgrades' => LTI_SETTING_NEVER,
        'lti_coursevisible' => LTI_COURSEVISIBLE_ACTIVITYCHOOSER,
        'lti_launchcontainer' => $container,
        'lti_' . MJP_MARKER => $tool['hub'],
    ];
}

/** Does the stored tool differ from what the config asks for? */
function mjp_differs(stdClass $type, array $stored, stdClass $config): bool {
    if ((int)$type->state !== LTI_TOOL_STATE_CONFIGURED || $type->name !== $config->lti_typename
            || $type->baseurl !== $config->lti_toolurl
            || (int)$type->coursevisible !== $config->lti_coursevisible) {
        return true;
    }
    foreach ($config as $key => $value) {
        $name = substr($key, 4);
        if (in_array($key, ['lti_typename', 'lti_toolurl', 'lti_description', 'lti_ltiversion'], true)) {
            continue;
        }
        if ((string)($stored[$name] ?? '') !== (string)$value) {
            return true;
        }
    }
    return false;
}

$ours = [];
foreach ($DB->get_records('lti_types_config', ['name' => MJP_MARKER]) as $row) {
    $ours[$row->value] = (int)$row->typeid;
}

$changed = false;
$report = [];
$prefix = (string)($wanted['prefix'] ?? 'JupyterHub');
$container = (int)($wanted['launchcontainer'] ?? LTI_LAUNCH_CONTAINER_WINDOW);
foreach ($wanted['tools'] ?? [] as $tool) {
    foreach (['hub', 'url', 'key', 'secret'] as $field) {
        if (!is_string($tool[$field] ?? null) || $tool[$field] === '') {
            fwrite(STDERR, "lti_tools.php: a tool lacks '$field'\n");
            exit(2);
        }
    }
    $config = mjp_tool_config($tool, $prefix, $container);
    $typeid = $ours[$tool['hub']] ?? null;
    if ($typeid === null) {
        $type = (object)['state' => LTI_TOOL_STATE_CONFIGURED];
        $typeid = (int)lti_add_type($type, $config);
        $action = 'created';
    } else {
        $type = $DB->get_record('lti_types', ['id' => $typeid]);
        if (mjp_differs($type, lti_get_type_config($typeid), $config)) {
            $type->state = LTI_TOOL_STATE_CONFIGURED;
            lti_update_type($type, $config);
            $action = 'updated';
        } else {
            $action = 'unchanged';
        }
    }
    $changed = $changed || $action !== 'unchanged';
    $report[] = ['hub' => $tool['hub'], 'id' => $typeid, 'action' => $action];
    unset($ours[$tool['hub']]);
}

// Hubs gone from the inventory: hide and disable their tools, keep the records.
foreach ($ours as $hub => $typeid) {
    $type = $DB->get_record('lti_types', ['id' => $typeid]);
    $action = 'disabled';
    if ((int)$type->state === LTI_TOOL_STATE_PENDING && (int)$type->coursevisible === LTI_COURSEVISIBLE_NO) {
        $action = 'unchanged';
    } else {
        $type->state = LTI_TOOL_STATE_PENDING;
        lti_update_type($type, (object)['lti_coursevisible' => LTI_COURSEVISIBLE_NO]);
        $changed = true;
    }
    $report[] = ['hub' => $hub, 'id' => $typeid, 'action' => $action];
}

echo json_encode(['changed' => $changed, 'tools' => $report]), "\n";
