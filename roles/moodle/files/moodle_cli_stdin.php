<?php
// Managed by Ansible (role moodle).
//
// Runs one of Moodle's own admin/cli scripts with options that must never show in a
// process list (passwords). The ordinary options come as arguments; the secret ones as a
// JSON object on standard input, {"adminpass": "..."}. They are added to $_SERVER['argv']
// inside this PHP process only -- which is where Moodle's cli_get_params() reads its
// options -- and Moodle's script then runs in this same process, so Moodle's own code does
// the work while /proc/<pid>/cmdline never holds a secret.
//
// Usage (as the web user):
//   php moodle_cli_stdin.php /srv/moodle/blue/admin/cli/install_database.php \
//       --lang=en --agree-license ... < {"adminpass": "..."}
// Exit codes: those of the Moodle script; 2 for bad usage or input of this runner.

if (isset($_SERVER['REMOTE_ADDR']) || PHP_SAPI !== 'cli') {
    exit(1);
}

function mjp_cli_stdin_fail(string $message): void {
    fwrite(STDERR, "moodle_cli_stdin.php: $message\n");
    exit(2);
}

if (($_SERVER['argc'] ?? 0) < 2) {
    mjp_cli_stdin_fail('usage: moodle_cli_stdin.php <moodle>/admin/cli/<script>.php [options] < secrets.json');
}
$mjpclistdin_script = (string)$_SERVER['argv'][1];
if (!preg_match('~^/.*/admin/cli/[a-z0-9_]+\.php$~', $mjpclistdin_script) || !is_file($mjpclistdin_script)) {
    mjp_cli_stdin_fail("not a Moodle admin/cli script: $mjpclistdin_script");
}

try {
    $mjpclistdin_secrets = json_decode((string)stream_get_contents(STDIN), true, 2, JSON_THROW_ON_ERROR);
} catch (JsonException $e) {
    mjp_cli_stdin_fail('standard input is not a JSON object of options: ' . $e->getMessage());
}
if (!is_array($mjpclistdin_secrets) || ($mjpclistdin_secrets && array_is_list($mjpclistdin_secrets))) {
    mjp_cli_stdin_fail('standard input must be a JSON object {"option": "value"}');
}

// The secret options go right after the script name: cli_get_params() ignores everything
// after a lone "--", so they must come before any.
$mjpclistdin_argv = [$mjpclistdin_script];
foreach ($mjpclistdin_secrets as $mjpclistdin_name => $mjpclistdin_value) {
    if (!is_string($mjpclistdin_name) || !preg_match('/^[a-z][a-z0-9-]*$/', $mjpclistdin_name)
            || !is_string($mjpclistdin_value)) {
        mjp_cli_stdin_fail('each option on standard input must be "name": "string value"');
    }
    $mjpclistdin_argv[] = "--$mjpclistdin_name=$mjpclistdin_value";
}
array_push($mjpclistdin_argv, ...array_slice($_SERVER['argv'], 2));

// As if PHP had been started on the Moodle script with all of these arguments.
$_SERVER['argv'] = $argv = $mjpclistdin_argv;
$_SERVER['argc'] = $argc = count($mjpclistdin_argv);
$_SERVER['SCRIPT_FILENAME'] = $_SERVER['SCRIPT_NAME'] = $_SERVER['PHP_SELF'] = $mjpclistdin_script;
unset($mjpclistdin_argv, $mjpclistdin_secrets, $mjpclistdin_name, $mjpclistdin_value);

// Standard input is now at its end: the script runs without a terminal to ask questions on,
// as it does when Ansible runs it.
require $mjpclistdin_script;
