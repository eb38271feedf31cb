<?php
// STAND-IN ONLY (Moodle has no such script): creates and lists test content so tests
// can check that data and files survive upgrades and snapshots.
//   --add-row=TEXT   a row in {standin_data}
//   --add-file=PATH  a file stored like Moodle's file pool: <dataroot>/filedir/ab/cd/<sha1>
//                    (never rewritten once there) plus a {files} row
//   --list           JSON of rows, files (with "ondisk" and "intact" checks) and versions

define('CLI_SCRIPT', true);

require(__DIR__ . '/../../config.php');
require_once($CFG->libdir . '/clilib.php');

[$options, $unrecognised] = cli_get_params(
    ['add-row' => false, 'add-file' => false, 'list' => false, 'help' => false],
    ['h' => 'help']
);

cli_fail_unrecognised($unrecognised);

if ($options['help'] || !($options['add-row'] || $options['add-file'] || $options['list'])) {
    echo "Stand-in test content (not part of Moodle).

Options:
--add-row=TEXT   Store TEXT in the standin_data table
--add-file=PATH  Store a file in the file pool (dataroot/filedir) and the files table
--list           Print rows, files and versions as JSON
-h, --help       Print out this help
";
    exit(0);
}

if (empty($CFG->version)) {
    cli_error(get_string('missingconfigversion', 'debug'));
}

if ($options['add-row'] !== false) {
    if ($options['add-row'] === true) {
        cli_error('--add-row needs a value: --add-row=TEXT');
    }
    $id = $DB->insert_record('standin_data', ['content' => $options['add-row'], 'timecreated' => time()]);
    echo "row $id\n";
}

if ($options['add-file'] !== false) {
    $path = $options['add-file'];
    if ($path === true || !is_file($path) || !is_readable($path)) {
        cli_error('--add-file needs a readable file: --add-file=PATH');
    }
    $content = file_get_contents($path);
    $hash = sha1($content);
    $dir = make_writable_directory($CFG->filedir . '/' . substr($hash, 0, 2) . '/' . substr($hash, 2, 2));
    $target = "$dir/$hash";
    if (!file_exists($target)) {
        $tmp = "$target.tmp" . getmypid();
        file_put_contents($tmp, $content);
        chmod($tmp, $CFG->filepermissions);
        rename($tmp, $target);
    }
    $filename = basename($path);
    $pathnamehash = sha1("/1/standin/content/0/$filename");
    $record = $DB->get_record('files', ['pathnamehash' => $pathnamehash]);
    $now = time();
    if ($record) {
        $DB->update_record('files', ['id' => $record->id, 'contenthash' => $hash, 'filesize' => strlen($content), 'timemodified' => $now]);
    } else {
        $DB->insert_record('files', [
            'contenthash' => $hash, 'pathnamehash' => $pathnamehash, 'contextid' => 1, 'component' => 'standin',
            'filearea' => 'content', 'itemid' => 0, 'filepath' => '/', 'filename' => $filename, 'userid' => null,
            'filesize' => strlen($content), 'mimetype' => 'application/octet-stream', 'status' => 0,
            'timecreated' => $now, 'timemodified' => $now, 'sortorder' => 0,
        ]);
    }
    echo "file $hash\n";
}

if ($options['list']) {
    $rows = array_values(array_map(static fn($r) => (array)$r, $DB->get_records('standin_data', null, 'id')));
    $files = [];
    foreach ($DB->get_records('files', ['component' => 'standin'], 'id') as $file) {
        $pool = $CFG->filedir . '/' . substr($file->contenthash, 0, 2) . '/' . substr($file->contenthash, 2, 2) . '/' . $file->contenthash;
        $files[] = [
            'filename' => $file->filename,
            'contenthash' => $file->contenthash,
            'filesize' => (int)$file->filesize,
            'ondisk' => is_file($pool),
            'intact' => is_file($pool) && sha1_file($pool) === $file->contenthash,
        ];
    }
    $plugins = [];
    foreach ($DB->get_records('config_plugins', ['name' => 'version'], 'plugin') as $p) {
        $plugins[$p->plugin] = $p->value;
    }
    echo json_encode([
        'version' => (string)$CFG->version,
        'release' => (string)($CFG->release ?? ''),
        'branch' => (string)($CFG->branch ?? ''),
        'plugins' => $plugins,
        'rows' => $rows,
        'files' => $files,
    ], JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES) . "\n";
}
exit(0);
