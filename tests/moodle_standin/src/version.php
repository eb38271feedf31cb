<?php
// TEST STAND-IN for Moodle -- NOT Moodle. Same variables as Moodle's version.php.
// Stand-in release 1: a "4.5"-like release on branch 405.

defined('MOODLE_INTERNAL') || die();

$version  = 2024100700.00;              // YYYYMMDD      = weekly release date of this DEV branch.
                                        //         RR    = release increments - 00 in DEV branches.
                                        //           .XX = incremental changes.
$release  = '4.5 (Build: 20241007)';    // Human-friendly version name
$branch   = '405';                      // This version's branch.
$maturity = MATURITY_STABLE;            // This version's maturity level.
