<?php
// TEST STAND-IN for the fake mod_lticontainer's web service -- NOT the real plugin.
// mod_lticontainer_write_nblogs stores the first record of nb_logs where the real
// module's externallib stores it:
//   host=server -> lticontainer_server_data (status gets "/nc" when no client row has
//                  the same session and message);
//   host=client -> lticontainer_client_data, and lticontainer_tags for the "filename: x"
//                  / "codenum: n" tags of the cell (one row per cell and file);
//   otherwise (ltictr) -> lticontainer_session, once per session, when lti_id is set,
//                  with the course of that LTI activity (0 here when it does not exist;
//                  the real module needs the activity).
// updatetm is the record's date (strtotime) when it has one, else now.

defined('MOODLE_INTERNAL') || die();

require_once("$CFG->libdir/externallib.php");

class mod_lticontainer_external extends external_api {
    public static function write_nblogs_parameters(): external_function_parameters {
        $text = static fn(string $what) => new external_value(PARAM_TEXT, $what, VALUE_OPTIONAL);
        return new external_function_parameters([
            'nb_logs' => new external_multiple_structure(new external_single_structure([
                'host' => new external_value(PARAM_TEXT, 'ltictr, client or server', VALUE_DEFAULT, 'ltictr'),
                'inst_id' => $text('id of the mod_lticontainer instance'),
                'lti_id' => $text('id of the LTI activity'),
                'session' => $text('kernel session id'),
                'message' => $text('message id'),
                'status' => $text('status of the execution'),
                'username' => $text('user name in the notebook'),
                'cell_id' => $text('cell id'),
                'tags' => $text('tags of the cell (JSON text)'),
                'date' => $text('date of the message'),
            ])),
        ]);
    }

    public static function write_nblogs($nblogs) {
        global $DB;
        $params = self::validate_parameters(self::write_nblogs_parameters(), ['nb_logs' => $nblogs]);
        $log = (object)$params['nb_logs'][0];
        $log->updatetm = !empty($log->date) && strtotime($log->date) !== false ? strtotime($log->date) : time();

        if ($log->host === 'server') {
            if (!$DB->record_exists('lticontainer_client_data', ['session' => $log->session ?? '', 'message' => $log->message ?? ''])) {
                $log->status = ($log->status ?? '') . '/nc';
            }
            $DB->insert_record('lticontainer_server_data', $log);
        } else if ($log->host === 'client') {
            if (($log->tags ?? '') !== '') {
                preg_match_all('/"(filename|codenum):\s*([^"]+)"/u', $log->tags, $matches, PREG_SET_ORDER);
                foreach ($matches as $match) {
                    $log->{$match[1]} = $match[2];
                }
                $tag = $DB->get_record('lticontainer_tags', ['cell_id' => $log->cell_id ?? '', 'filename' => $log->filename ?? null]);
                if (!$tag) {
                    $DB->insert_record('lticontainer_tags', $log);
                } else if (($log->codenum ?? null) != $tag->codenum) {
                    $DB->update_record('lticontainer_tags', ['id' => $tag->id] + (array)$log);
                }
            }
            $DB->insert_record('lticontainer_client_data', $log);
        } else if (($log->lti_id ?? '') !== '') {
            if (!$DB->record_exists('lticontainer_session', ['session' => $log->session ?? ''])) {
                $lti = $DB->get_record('lti', ['id' => (int)$log->lti_id]);
                $log->course = $lti ? (int)$lti->course : 0;
                $log->inst_id = (int)($log->inst_id ?? 0);
                $log->lti_id = (int)$log->lti_id;
                $DB->insert_record('lticontainer_session', $log);
            }
        }
        return [];
    }

    public static function write_nblogs_returns(): external_single_structure {
        return new external_single_structure([]);
    }
}
