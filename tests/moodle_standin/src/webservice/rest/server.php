<?php
// TEST STAND-IN for Moodle's webservice/rest/server.php -- NOT Moodle code.
// Token-authenticated REST calls: wstoken, wsfunction, moodlewsrestformat (xml or json)
// and the function's parameters in the query or the form body. Like Moodle: 403 with an
// empty body when web services or the REST protocol are off; every other failure is
// HTTP 200 with an EXCEPTION document (XML) or {"exception", "errorcode", "message"} (JSON).

define('NO_DEBUG_DISPLAY', true);
define('NO_MOODLE_COOKIES', true);
define('WS_SERVER', true);

require(__DIR__ . '/../../config.php');
require_once($CFG->dirroot . '/webservice/lib.php');

if (!webservice_protocol_is_enabled('rest')) {
    header(($_SERVER['SERVER_PROTOCOL'] ?? 'HTTP/1.1') . ' 403 Forbidden');
    die;
}

$standinformat = ($_REQUEST['moodlewsrestformat'] ?? 'xml') === 'json' ? 'json' : 'xml';
$standintoken = clean_param($_REQUEST['wstoken'] ?? '', PARAM_ALPHANUM);
$standinfunction = (string)($_REQUEST['wsfunction'] ?? '');
$standinparams = $_REQUEST;
unset($standinparams['wstoken'], $standinparams['wsfunction'], $standinparams['moodlewsrestformat']);

/** The XML of a return value, as Moodle's xmlize_result(). */
function standin_xmlize($returns, ?external_description $desc): string {
    if ($desc === null) {
        return '';
    }
    if ($desc instanceof external_value) {
        return $returns === null ? "<VALUE null=\"null\"/>\n"
            : '<VALUE>' . htmlspecialchars((string)$returns, ENT_COMPAT, 'UTF-8') . "</VALUE>\n";
    }
    if ($desc instanceof external_multiple_structure) {
        $out = "<MULTIPLE>\n";
        foreach ((array)$returns as $value) {
            $out .= standin_xmlize($value, $desc->content);
        }
        return $out . "</MULTIPLE>\n";
    }
    $out = "<SINGLE>\n";
    $returns = (array)$returns;
    foreach ($desc->keys as $key => $sub) {
        if (array_key_exists($key, $returns)) {
            $out .= '<KEY name="' . $key . '">' . standin_xmlize($returns[$key], $sub) . "</KEY>\n";
        }
    }
    return $out . "</SINGLE>\n";
}

function standin_ws_headers(string $format): void {
    header('Content-Type: ' . ($format === 'json' ? 'application/json' : 'application/xml; charset=utf-8'));
    header('Cache-Control: private, must-revalidate, pre-check=0, post-check=0, max-age=0');
    header('Expires: ' . gmdate('D, d M Y H:i:s', 0) . ' GMT');
    header('Pragma: no-cache');
    header('Accept-Ranges: none');
}

try {
    [$standinuser, $standintokenrecord, $standinservice] = webservice::standin_authenticate_by_token($standintoken, 'rest');

    $function = $DB->get_record('external_functions', ['name' => $standinfunction]);
    if (!$function) {
        throw new dml_missing_record_exception('external_functions');
    }
    if (!$DB->record_exists('external_services_functions', ['externalserviceid' => (int)$standinservice->id,
            'functionname' => $function->name])) {
        throw new webservice_access_exception('Access to the function ' . $function->name . '() is not allowed. '
            . 'There could be multiple reasons for this: 1. The service linked to the user token does not contain the function. '
            . '2. The service is user-restricted and the user is not listed. 3. The service is IP-restricted and the user IP '
            . 'is not listed. 4. The service is time-restricted and the time has expired. 5. The token is time-restricted and '
            . 'the time has expired. 6. The user has no capability to use the function.');
    }
    if (!empty($function->classpath)) {
        require_once($CFG->dirroot . '/' . $function->classpath);
    }
    $class = $function->classname;
    $method = $function->methodname;
    $paramsmethod = $method . '_parameters';
    $returnsmethod = $method . '_returns';
    $params = external_api::validate_parameters($class::$paramsmethod(), $standinparams);
    $returns = $class::$method(...array_values($params));
    $returnsdesc = $class::$returnsmethod();

    standin_ws_headers($standinformat);
    if ($standinformat === 'json') {
        echo json_encode($returnsdesc instanceof external_single_structure && !$returnsdesc->keys ? [] : $returns);
    } else {
        echo "<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n<RESPONSE>\n" . standin_xmlize($returns, $returnsdesc) . "</RESPONSE>\n";
    }
} catch (Throwable $e) {
    $errorcode = $e instanceof moodle_exception ? $e->errorcode : 'unknownerror';
    standin_ws_headers($standinformat);
    if ($standinformat === 'json') {
        echo json_encode(['exception' => get_class($e), 'errorcode' => $errorcode, 'message' => $e->getMessage()]);
    } else {
        echo "<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n<EXCEPTION class=\"" . get_class($e) . "\">\n"
            . '<ERRORCODE>' . htmlspecialchars($errorcode, ENT_COMPAT, 'UTF-8') . "</ERRORCODE>\n"
            . '<MESSAGE>' . htmlspecialchars($e->getMessage(), ENT_COMPAT, 'UTF-8') . "</MESSAGE>\n"
            . "</EXCEPTION>\n";
    }
}
