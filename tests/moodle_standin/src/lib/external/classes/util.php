<?php
// TEST STAND-IN for \core_external\util (lib/external/classes/util.php) -- NOT Moodle code.

namespace core_external;

defined('MOODLE_INTERNAL') || die();

class util {
    /**
     * Creates a token of $tokentype for $userid and $service and returns it, as Moodle's
     * util::generate_token(): 32 hex characters, a 64-character private token, the
     * service's required capability checked, creator = the current user.
     */
    public static function generate_token(int $tokentype, \stdClass $service, int $userid, $context,
            int $validuntil = 0, string $iprestriction = '', string $name = ''): string {
        global $DB, $USER;
        if (!empty($service->requiredcapability) && !has_capability($service->requiredcapability, $context, $userid)) {
            throw new \moodle_exception('nocapabilitytousethisservice', 'webservice');
        }
        do {
            $token = bin2hex(random_bytes(16));
        } while ($DB->record_exists('external_tokens', ['token' => $token]));
        $DB->insert_record('external_tokens', [
            'token' => $token, 'privatetoken' => random_string(64), 'tokentype' => $tokentype,
            'userid' => $userid, 'externalserviceid' => (int)$service->id,
            'sid' => $tokentype === EXTERNAL_TOKEN_EMBEDDED ? session_id() : null,
            'contextid' => (int)$context->id, 'creatorid' => (int)($USER->id ?? 0),
            'iprestriction' => $iprestriction !== '' ? $iprestriction : null,
            'validuntil' => $validuntil, 'timecreated' => time(), 'name' => $name,
        ]);
        return $token;
    }
}
