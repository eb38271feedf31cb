<?php
// TEST STAND-IN for Moodle's external API (lib/externallib.php, \core_external\*) --
// NOT Moodle code. The description classes a plugin's externallib.php builds its
// parameters from, and external_api::validate_parameters() for text values, single
// and multiple structures, VALUE_REQUIRED / VALUE_OPTIONAL / VALUE_DEFAULT.

defined('MOODLE_INTERNAL') || die();

const VALUE_REQUIRED = 1;
const VALUE_OPTIONAL = 2;
const VALUE_DEFAULT = 0;

const PARAM_RAW = 'raw';
const PARAM_TEXT = 'text';
const PARAM_INT = 'int';
const PARAM_ALPHANUM = 'alphanum';

class invalid_parameter_exception extends moodle_exception {
    public function __construct(?string $debuginfo = null) {
        parent::__construct('invalidparameter', 'webservice', '', null, $debuginfo);
    }
}

abstract class external_description {
    public string $desc;
    public bool $required;
    public $default;
    public bool $hasdefault;

    public function __construct(string $desc, int $required, $default) {
        $this->desc = $desc;
        $this->required = $required === VALUE_REQUIRED;
        $this->default = $required === VALUE_DEFAULT ? $default : null;
        $this->hasdefault = $required === VALUE_DEFAULT;
    }
}

class external_value extends external_description {
    public string $type;

    public function __construct(string $type, string $desc = '', int $required = VALUE_REQUIRED, $default = null) {
        parent::__construct($desc, $required, $default);
        $this->type = $type;
    }
}

class external_single_structure extends external_description {
    public array $keys;

    public function __construct(array $keys = [], string $desc = '', int $required = VALUE_REQUIRED, $default = null) {
        parent::__construct($desc, $required, $default);
        $this->keys = $keys;
    }
}

class external_function_parameters extends external_single_structure {
}

class external_multiple_structure extends external_description {
    public external_description $content;

    public function __construct(external_description $content, string $desc = '', int $required = VALUE_REQUIRED, $default = null) {
        parent::__construct($desc, $required, $default);
        $this->content = $content;
    }
}

/** Moodle's clean_param() for the types above. */
function clean_param($value, string $type) {
    switch ($type) {
        case PARAM_INT:
            return (int)$value;
        case PARAM_ALPHANUM:
            return preg_replace('/[^A-Za-z0-9]/', '', (string)$value);
        case PARAM_TEXT:
            return strip_tags((string)$value);
        default:
            return $value;
    }
}

class external_api {
    /** Checks and cleans $params against $description as Moodle does; unknown keys are errors. */
    public static function validate_parameters(external_description $description, $params) {
        if ($description instanceof external_value) {
            if (is_array($params) || is_object($params)) {
                throw new invalid_parameter_exception('Scalar type expected, array or object received.');
            }
            return clean_param($params, $description->type);
        }
        if ($description instanceof external_single_structure) {
            if (!is_array($params)) {
                throw new invalid_parameter_exception('Only arrays accepted. The bad value is: \'' . print_r($params, true) . '\'');
            }
            $result = [];
            foreach ($description->keys as $key => $subdesc) {
                if (!array_key_exists($key, $params)) {
                    if ($subdesc->required) {
                        throw new invalid_parameter_exception("Missing required key in single structure: $key");
                    }
                    if ($subdesc->hasdefault) {
                        $result[$key] = $subdesc->default;
                    }
                    continue;
                }
                $result[$key] = self::validate_parameters($subdesc, $params[$key]);
                unset($params[$key]);
            }
            if ($params) {
                throw new invalid_parameter_exception('Unexpected keys (' . implode(', ', array_keys($params)) . ') detected in parameter array.');
            }
            return $result;
        }
        if ($description instanceof external_multiple_structure) {
            if (!is_array($params)) {
                throw new invalid_parameter_exception('Only arrays accepted. The bad value is: \'' . print_r($params, true) . '\'');
            }
            $result = [];
            foreach ($params as $item) {
                $result[] = self::validate_parameters($description->content, $item);
            }
            return $result;
        }
        throw new invalid_parameter_exception('Invalid external api description');
    }
}
