<?php
// TEST STAND-IN for Moodle -- NOT Moodle. Same variables as Moodle's version.php.
// Stand-in release 2: newer 4.5.x with a schema change (see lib/db/upgrade.php).

defined('MOODLE_INTERNAL') || die();

$version  = 2024100701.00;              // YYYYMMDD      = weekly release date of this DEV branch.
                                        //         RR    = release increments - 00 in DEV branches.
                                        //           .XX = incremental changes.
$release  = '4.5.1 (Build: 20241209)';  // Human-friendly version name
$branch   = '405';                      // This version's branch.
$maturity = MATURITY_STABLE;            // This version's maturity level.
