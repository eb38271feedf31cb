<?php
// TEST STAND-IN for Moodle's lib/clilib.php -- NOT Moodle code.
// Written from Moodle's documented CLI behaviour: same function names, same option
// parsing rules, same error stream (STDERR) and exit codes as the real cli_* helpers.

/**
 * Writes text to a stream (STDOUT by default).
 */
function cli_write(string $text, $stream = STDOUT): void {
    fwrite($stream, $text);
}

/**
 * Writes text and a newline to a stream.
 */
function cli_writeln(string $text, $stream = STDOUT): void {
    cli_write($text . PHP_EOL, $stream);
}

/**
 * Prints a non fatal problem on STDERR.
 */
function cli_problem(string $text): void {
    cli_writeln($text, STDERR);
}

/**
 * Prints an error on STDERR (followed by an empty line, like Moodle) and exits.
 */
function cli_error(string $text, int $errorcode = 1): void {
    cli_writeln($text . PHP_EOL, STDERR);
    exit($errorcode);
}

/**
 * Prints a line of dashes.
 */
function cli_separator(bool $return = false): ?string {
    $line = str_repeat('-', 79) . PHP_EOL;
    if ($return) {
        return $line;
    }
    cli_write($line);
    return null;
}

/**
 * Prints "== text ==".
 */
function cli_heading(string $text, bool $return = false): ?string {
    $line = "== $text ==" . PHP_EOL;
    if ($return) {
        return $line;
    }
    cli_write($line);
    return null;
}

/**
 * Reads a line of input. Real Moodle keeps asking on invalid input; with no terminal
 * (EOF on STDIN) that would spin for ever, so the stand-in gives up with exit code 1.
 */
function cli_input(string $prompt, string $default = '', ?array $options = null, bool $casesensitive = false): string {
    cli_writeln($prompt);
    cli_write(': ');
    $input = fgets(STDIN);
    if ($input === false) {
        cli_error(get_string('cliincorrectvalueretry', 'admin') . ' (no input available)');
    }
    $input = trim($input);
    if ($input === '') {
        $input = $default;
    }
    if ($options) {
        if (!$casesensitive) {
            $input = strtolower($input);
        }
        if (!in_array($input, $options, true)) {
            cli_writeln(get_string('cliincorrectvalueretry', 'admin'));
            return cli_input($prompt, $default, $options, $casesensitive);
        }
    }
    return $input;
}

/**
 * Parses $_SERVER['argv'] the way Moodle does.
 *
 * --name or --name=value for long options, -x or -x=value for short ones (mapped to
 * long names). Anything else, including bare words, is unrecognised. Everything after
 * a lone "--" is ignored. Options without a value become true.
 *
 * @return array [options with defaults applied, list of unrecognised raw arguments]
 */
function cli_get_params(array $longoptions, ?array $shortmapping = null): array {
    $shortmapping = $shortmapping ?? [];
    $options = [];
    $unrecognised = [];

    $raw = $_SERVER['argv'] ?? [];
    $stop = array_search('--', $raw, true);
    if ($stop !== false) {
        $raw = array_slice($raw, 0, $stop);
    }
    array_shift($raw); // The script name.

    foreach ($raw as $arg) {
        if (str_starts_with($arg, '--')) {
            $body = substr($arg, 2);
            $isshort = false;
        } else if (str_starts_with($arg, '-')) {
            $body = substr($arg, 1);
            $isshort = true;
        } else {
            $unrecognised[] = $arg;
            continue;
        }
        $eq = strpos($body, '=');
        $key = $eq === false ? $body : substr($body, 0, $eq);
        $value = $eq === false ? true : substr($body, $eq + 1);
        if (!array_key_exists($key, $isshort ? $shortmapping : $longoptions)) {
            $unrecognised[] = $arg;
            continue;
        }
        $name = $isshort ? $shortmapping[$key] : $key;
        $options[$name] = $value;
    }

    foreach ($longoptions as $name => $default) {
        if (!array_key_exists($name, $options)) {
            $options[$name] = $default;
        }
    }
    return [$options, $unrecognised];
}

/**
 * Fails like every real admin/cli script does when given unknown options.
 */
function cli_fail_unrecognised(array $unrecognised, int $exitcode = 1): void {
    if ($unrecognised) {
        cli_error(get_string('cliunknowoption', 'admin', implode("\n  ", $unrecognised)), $exitcode);
    }
}

/**
 * Moodle's mtrace(): progress output of cron-like scripts.
 */
function mtrace(string $text, string $eol = "\n"): void {
    echo $text . $eol;
}
