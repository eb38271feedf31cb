<?php
// TEST STAND-IN for Moodle's database layer (lib/dmllib.php) -- NOT Moodle code.
// A small PDO wrapper with the same method names and calling conventions as the
// parts of Moodle's $DB API that the toolkit's scripts use: {tablename} in SQL gets
// $CFG->prefix, records are stdClass objects with string values, get_records*()
// are keyed by the first column, insert_record() ignores fields the table lacks.

defined('MOODLE_INTERNAL') || die();

const IGNORE_MISSING = 0;
const IGNORE_MULTIPLE = 1;
const MUST_EXIST = 2;

class moodle_exception extends Exception {
    public string $errorcode;
    public string $module;
    public ?string $debuginfo;

    public function __construct(string $errorcode, string $module = '', string $link = '', $a = null, ?string $debuginfo = null) {
        $this->errorcode = $errorcode;
        $this->module = $module;
        $this->debuginfo = $debuginfo;
        parent::__construct(get_string($errorcode, $module ?: 'error', $a));
    }
}

class dml_exception extends moodle_exception {
    public function __construct(string $errorcode, $a = null, ?string $debuginfo = null) {
        parent::__construct($errorcode, 'error', '', $a, $debuginfo);
    }
}

class dml_connection_exception extends dml_exception {
    public function __construct(string $error) {
        parent::__construct('dbconnectionfailed', null, $error);
    }
}

class dml_read_exception extends dml_exception {
    public function __construct(string $error, string $sql) {
        parent::__construct('dmlreadexception', null, "$error\n$sql");
    }
}

class dml_write_exception extends dml_exception {
    public function __construct(string $error, string $sql) {
        parent::__construct('dmlwriteexception', null, "$error\n$sql");
    }
}

class dml_missing_record_exception extends dml_exception {
    public function __construct(string $table) {
        parent::__construct('invalidrecord', $table);
    }
}

class downgrade_exception extends moodle_exception {
    public function __construct(?string $plugin, $oldversion, $newversion) {
        $a = (object)['plugin' => $plugin ?? 'core', 'oldversion' => $oldversion, 'newversion' => $newversion];
        parent::__construct('cannotdowngrade', 'debug', '', $a);
    }
}

class upgrade_exception extends moodle_exception {
    public function __construct(?string $plugin, $version, ?string $debuginfo = null) {
        $a = (object)['plugin' => $plugin ?? 'core', 'version' => $version];
        parent::__construct('upgradeerror', 'admin', '', $a, $debuginfo);
    }
}

/**
 * The $DB object.
 */
class standin_database {
    private PDO $pdo;
    private string $family;
    private string $prefix;
    private array $columns = [];
    private ?standin_database_manager $manager = null;

    private function __construct(PDO $pdo, string $family, string $prefix) {
        $this->pdo = $pdo;
        $this->family = $family;
        $this->prefix = $prefix;
    }

    /**
     * Connects with the settings of config.php ($CFG->dbtype, dbhost, dbname, dbuser,
     * dbpass, prefix, dboptions[dbport|dbsocket|dbcollation]).
     */
    public static function connect(stdClass $cfg): self {
        $type = $cfg->dbtype ?? '';
        $options = (array)($cfg->dboptions ?? []);
        $host = (string)($cfg->dbhost ?? 'localhost');
        $port = (string)($options['dbport'] ?? '');
        $socket = $options['dbsocket'] ?? '';
        $dbname = (string)($cfg->dbname ?? '');

        if ($type === 'mariadb' || $type === 'mysqli' || $type === 'auroramysql') {
            $family = 'mysql';
            $collation = (string)($options['dbcollation'] ?? 'utf8mb4_unicode_ci');
            $dsn = "mysql:dbname=$dbname;charset=utf8mb4";
            if (is_string($socket) && $socket !== '' && $socket !== '1') {
                $dsn .= ";unix_socket=$socket";
            } else {
                // Like mysqli: "localhost" means the default socket unless a port is given.
                $dsn .= ";host=$host" . ($port !== '' ? ";port=$port" : '');
            }
            $init = [PDO::MYSQL_ATTR_INIT_COMMAND => "SET NAMES utf8mb4 COLLATE $collation"];
        } else if ($type === 'pgsql') {
            $family = 'postgres';
            if (is_string($socket) && $socket !== '' && $socket !== '1') {
                $dsn = "pgsql:host=$socket;dbname=$dbname";
            } else if (!empty($socket) || $host === '') {
                $dsn = "pgsql:dbname=$dbname"; // Default unix socket.
            } else {
                $dsn = "pgsql:host=$host;dbname=$dbname";
            }
            if ($port !== '') {
                $dsn .= ";port=$port";
            }
            $init = [];
        } else {
            throw new dml_connection_exception("Unsupported \$CFG->dbtype '$type' (stand-in knows mariadb, mysqli, pgsql)");
        }

        try {
            $pdo = new PDO($dsn, (string)($cfg->dbuser ?? ''), (string)($cfg->dbpass ?? ''), $init + [
                PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION,
                PDO::ATTR_DEFAULT_FETCH_MODE => PDO::FETCH_ASSOC,
            ]);
        } catch (Throwable $e) {
            throw new dml_connection_exception($e->getMessage());
        }
        return new self($pdo, $family, (string)($cfg->prefix ?? ''));
    }

    public function get_dbfamily(): string {
        return $this->family;
    }

    public function get_prefix(): string {
        return $this->prefix;
    }

    public function get_manager(): standin_database_manager {
        return $this->manager ??= new standin_database_manager($this);
    }

    /** Replaces {name} with the prefixed table name. */
    public function fix_table_names(string $sql): string {
        return preg_replace('/\{([a-z][a-z0-9_]*)\}/', $this->prefix . '$1', $sql);
    }

    private function run(string $sql, array $params, bool $write): PDOStatement {
        $sql = $this->fix_table_names($sql);
        try {
            $stmt = $this->pdo->prepare($sql);
            $stmt->execute($params);
            return $stmt;
        } catch (PDOException $e) {
            throw $write ? new dml_write_exception($e->getMessage(), $sql) : new dml_read_exception($e->getMessage(), $sql);
        }
    }

    /** Moodle returns every value as a string (or null). */
    private static function to_record(array $row): stdClass {
        foreach ($row as $k => $v) {
            if ($v !== null && !is_string($v)) {
                $row[$k] = is_bool($v) ? ($v ? '1' : '0') : (string)$v;
            }
        }
        return (object)$row;
    }

    /** Builds "a = ? AND b IS NULL" from ['a' => 1, 'b' => null]. */
    private static function where(?array $conditions): array {
        if (!$conditions) {
            return ['', []];
        }
        $parts = [];
        $params = [];
        foreach ($conditions as $field => $value) {
            if ($value === null) {
                $parts[] = "$field IS NULL";
            } else {
                $parts[] = "$field = ?";
                $params[] = is_bool($value) ? (int)$value : $value;
            }
        }
        return [' WHERE ' . implode(' AND ', $parts), $params];
    }

    public function execute(string $sql, ?array $params = null): bool {
        $this->run($sql, $params ?? [], true);
        $this->columns = [];
        return true;
    }

    public function get_records_sql(string $sql, ?array $params = null, int $limitfrom = 0, int $limitnum = 0): array {
        if ($limitnum > 0) {
            $sql .= " LIMIT $limitnum" . ($limitfrom > 0 ? " OFFSET $limitfrom" : '');
        }
        $result = [];
        foreach ($this->run($sql, $params ?? [], false)->fetchAll() as $row) {
            $record = self::to_record($row);
            $key = reset($row);
            $result[(string)$key] = $record;
        }
        return $result;
    }

    public function get_record_sql(string $sql, ?array $params = null, int $strictness = IGNORE_MISSING) {
        $records = $this->get_records_sql($sql, $params);
        if (!$records) {
            if ($strictness === MUST_EXIST) {
                throw new dml_missing_record_exception($sql);
            }
            return false;
        }
        if (count($records) > 1 && $strictness === MUST_EXIST) {
            throw new dml_exception('multiplerecordsfound');
        }
        return reset($records);
    }

    public function get_records(string $table, ?array $conditions = null, string $sort = '', string $fields = '*'): array {
        [$where, $params] = self::where($conditions);
        $order = $sort !== '' ? " ORDER BY $sort" : '';
        return $this->get_records_sql("SELECT $fields FROM {" . $table . "}$where$order", $params);
    }

    public function get_record(string $table, array $conditions, string $fields = '*', int $strictness = IGNORE_MISSING) {
        [$where, $params] = self::where($conditions);
        $record = $this->get_record_sql("SELECT $fields FROM {" . $table . "}$where", $params, $strictness);
        if ($record === false && $strictness === MUST_EXIST) {
            throw new dml_missing_record_exception($table);
        }
        return $record;
    }

    public function get_field(string $table, string $return, array $conditions, int $strictness = IGNORE_MISSING) {
        $record = $this->get_record($table, $conditions, $return, $strictness);
        return $record === false ? false : reset($record);
    }

    public function get_field_sql(string $sql, ?array $params = null, int $strictness = IGNORE_MISSING) {
        $record = $this->get_record_sql($sql, $params, $strictness);
        return $record === false ? false : reset($record);
    }

    public function record_exists(string $table, array $conditions): bool {
        return $this->count_records($table, $conditions) > 0;
    }

    public function count_records(string $table, ?array $conditions = null): int {
        [$where, $params] = self::where($conditions);
        return (int)$this->get_field_sql("SELECT COUNT(*) AS c FROM {" . $table . "}$where", $params);
    }

    public function set_field(string $table, string $newfield, $newvalue, ?array $conditions = null): bool {
        [$where, $params] = self::where($conditions);
        $this->run("UPDATE {" . $table . "} SET $newfield = ?$where", array_merge([$newvalue], $params), true);
        return true;
    }

    public function delete_records(string $table, ?array $conditions = null): bool {
        [$where, $params] = self::where($conditions);
        $this->run("DELETE FROM {" . $table . "}$where", $params, true);
        return true;
    }

    /** Like Moodle: unknown fields are dropped, any given id is ignored, returns the new id. */
    public function insert_record(string $table, $dataobject, bool $returnid = true, bool $bulk = false) {
        $data = array_intersect_key((array)$dataobject, array_flip($this->get_columns($table)));
        unset($data['id']);
        $data = array_map(static fn($v) => is_bool($v) ? (int)$v : $v, $data);
        $cols = implode(', ', array_keys($data));
        $marks = implode(', ', array_fill(0, count($data), '?'));
        $sql = "INSERT INTO {" . $table . "} ($cols) VALUES ($marks)";
        if ($this->family === 'postgres') {
            $id = $this->run("$sql RETURNING id", array_values($data), true)->fetchColumn();
        } else {
            $this->run($sql, array_values($data), true);
            $id = $this->pdo->lastInsertId();
        }
        return $returnid ? (int)$id : true;
    }

    public function update_record(string $table, $dataobject, bool $bulk = false): bool {
        $data = array_intersect_key((array)$dataobject, array_flip($this->get_columns($table)));
        if (!isset($data['id'])) {
            throw new dml_exception('missingparameter', null, 'update_record() needs an id');
        }
        $id = $data['id'];
        unset($data['id']);
        if (!$data) {
            return true;
        }
        $sets = implode(', ', array_map(static fn($c) => "$c = ?", array_keys($data)));
        $values = array_map(static fn($v) => is_bool($v) ? (int)$v : $v, array_values($data));
        $this->run("UPDATE {" . $table . "} SET $sets WHERE id = ?", array_merge($values, [$id]), true);
        return true;
    }

    /** Table names without the prefix. */
    public function get_tables(): array {
        if ($this->family === 'postgres') {
            $sql = "SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = current_schema()";
        } else {
            $sql = "SHOW TABLES";
        }
        $tables = [];
        foreach ($this->pdo->query($sql)->fetchAll(PDO::FETCH_COLUMN) as $name) {
            if ($this->prefix === '' || str_starts_with($name, $this->prefix)) {
                $short = substr($name, strlen($this->prefix));
                $tables[$short] = $short;
            }
        }
        return $tables;
    }

    /** Column names of a table (cached per request). */
    public function get_columns(string $table): array {
        if (!isset($this->columns[$table])) {
            if ($this->family === 'postgres') {
                $sql = "SELECT column_name FROM information_schema.columns
                         WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position";
            } else {
                $sql = "SELECT column_name FROM information_schema.columns
                         WHERE table_schema = DATABASE() AND table_name = ? ORDER BY ordinal_position";
            }
            $stmt = $this->pdo->prepare($sql);
            $stmt->execute([$this->prefix . $table]);
            $this->columns[$table] = $stmt->fetchAll(PDO::FETCH_COLUMN);
        }
        return $this->columns[$table];
    }

    public function reset_caches(): void {
        $this->columns = [];
    }
}

/**
 * A very small DDL helper standing in for Moodle's database_manager. Tables are
 * described as ['fields' => [name => spec], 'indexes' => [[fields, unique]]], where a
 * spec is ['type' => int|char|text|number, 'length' => n, 'notnull' => bool,
 * 'default' => value, 'sequence' => true for the id column].
 */
class standin_database_manager {
    private standin_database $db;

    public function __construct(standin_database $db) {
        $this->db = $db;
    }

    public function table_exists(string $table): bool {
        return in_array($table, $this->db->get_tables(), true);
    }

    public function field_exists(string $table, string $field): bool {
        return in_array($field, $this->db->get_columns($table), true);
    }

    private function column_sql(string $name, array $spec): string {
        $mysql = $this->db->get_dbfamily() === 'mysql';
        if (!empty($spec['sequence'])) {
            return $mysql ? "$name BIGINT(10) NOT NULL AUTO_INCREMENT PRIMARY KEY" : "$name BIGSERIAL PRIMARY KEY";
        }
        $type = match ($spec['type']) {
            'int' => $mysql ? 'BIGINT(10)' : 'BIGINT',
            'char' => 'VARCHAR(' . ($spec['length'] ?? 255) . ')',
            'text' => $mysql ? 'LONGTEXT' : 'TEXT',
            'number' => 'NUMERIC(' . ($spec['length'] ?? 10) . ',' . ($spec['decimals'] ?? 5) . ')',
        };
        $sql = "$name $type";
        if (!empty($spec['notnull'])) {
            $sql .= ' NOT NULL';
        }
        if (array_key_exists('default', $spec) && $spec['type'] !== 'text') {
            $default = $spec['default'];
            $sql .= ' DEFAULT ' . (is_int($default) || is_float($default) ? $default : "'" . addslashes((string)$default) . "'");
        }
        return $sql;
    }

    public function create_table(string $table, array $definition): void {
        $columns = [];
        foreach ($definition['fields'] as $name => $spec) {
            $columns[] = $this->column_sql($name, $spec);
        }
        $suffix = $this->db->get_dbfamily() === 'mysql' ? ' ENGINE=InnoDB DEFAULT CHARSET=utf8mb4' : '';
        $this->db->execute("CREATE TABLE {" . $table . "} (\n  " . implode(",\n  ", $columns) . "\n)$suffix");
        foreach ($definition['indexes'] ?? [] as $i => $index) {
            $unique = !empty($index['unique']) ? 'UNIQUE ' : '';
            $name = $this->db->get_prefix() . $table . '_ix' . $i;
            $this->db->execute("CREATE {$unique}INDEX $name ON {" . $table . "} (" . implode(', ', $index['fields']) . ")");
        }
    }

    public function add_field(string $table, string $field, array $spec): void {
        $this->db->execute("ALTER TABLE {" . $table . "} ADD " . $this->column_sql($field, $spec));
    }

    public function drop_table(string $table): void {
        $this->db->execute("DROP TABLE {" . $table . "}");
    }

    /** Creates every table of a schema file (lib/db/install.php, mod/x/db/install.php). */
    public function install_from_file(string $file): void {
        $tables = require($file);
        foreach ($tables as $name => $definition) {
            $this->create_table($name, $definition);
        }
    }
}
