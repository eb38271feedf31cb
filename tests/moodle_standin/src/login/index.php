<?php
// TEST STAND-IN for Moodle's login/index.php -- NOT Moodle code.
// GET: the login form, with Moodle's hidden "logintoken" tied to the session.
// POST username, password, logintoken: checked against {user} with password_verify();
// on success a new MoodleSession id is issued and the browser is sent (303) to the
// front page, which then says "You are logged in as <username>". A wrong password,
// an unknown user or a missing/stale logintoken gives "Invalid login, please try again".

require_once(__DIR__ . '/../config.php');

redirect_if_major_upgrade_required();

$error = '';
if (($_SERVER['REQUEST_METHOD'] ?? 'GET') === 'POST') {
    $username = trim(strtolower((string)($_POST['username'] ?? '')));
    $password = (string)($_POST['password'] ?? '');
    $token = (string)($_POST['logintoken'] ?? '');
    $expected = (string)($_SESSION['logintoken'] ?? '');
    $tokenok = !empty($CFG->disablelogintoken) || ($expected !== '' && hash_equals($expected, $token));
    $user = $username !== '' ? $DB->get_record('user', ['username' => $username, 'mnethostid' => 1, 'deleted' => 0]) : false;
    if ($tokenok && $user && empty($user->suspended) && $user->auth === 'manual'
            && password_verify($password, $user->password)) {
        session_regenerate_id(true);
        unset($_SESSION['logintoken']);
        $_SESSION['USERID'] = (int)$user->id;
        $now = time();
        $DB->update_record('user', ['id' => $user->id, 'lastlogin' => (int)$user->currentlogin, 'currentlogin' => $now,
            'lastaccess' => $now, 'firstaccess' => $user->firstaccess ?: $now]);
        $DB->insert_record('sessions', ['state' => 0, 'sid' => session_id(), 'userid' => $user->id, 'timecreated' => $now,
            'timemodified' => $now, 'firstip' => $_SERVER['REMOTE_ADDR'] ?? '', 'lastip' => $_SERVER['REMOTE_ADDR'] ?? '']);
        redirect($CFG->wwwroot . '/', get_string('loggedinas', 'moodle', $user->username));
    }
    $error = get_string('invalidlogin');
}

$_SESSION['logintoken'] = $_SESSION['logintoken'] ?? random_string(32);

$form = '<form action="' . s($CFG->wwwroot . '/login/index.php') . '" method="post" id="login">'
    . '<input type="hidden" name="logintoken" value="' . s($_SESSION['logintoken']) . '">'
    . '<label for="username">Username</label> <input type="text" name="username" id="username"> '
    . '<label for="password">Password</label> <input type="password" name="password" id="password"> '
    . '<button type="submit" id="loginbtn">' . s(get_string('login')) . '</button></form>';
$body = '<h1>' . s($SITE->fullname) . '</h1>'
    . ($error !== '' ? '<div class="alert alert-danger" id="loginerrormessage">' . s($error) . '</div>' : '')
    . $form;
standin_page(get_string('login') . ': ' . $SITE->fullname, $body, 'page-login-index');
