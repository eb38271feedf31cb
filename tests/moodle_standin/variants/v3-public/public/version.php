<?php
// TEST STAND-IN for Moodle -- NOT Moodle. Same variables as Moodle's version.php.
// Stand-in release 3: a 5.1-like release with the public/ layout.

defined('MOODLE_INTERNAL') || die();

$version  = 2025100600.00;              // YYYYMMDD      = weekly release date of this DEV branch.
                                        //         RR    = release increments - 00 in DEV branches.
                                        //           .XX = incremental changes.
$release  = '5.1 (Build: 20251006)';  // Human-friendly version name
$branch   = '501';                      // This version's branch.
$maturity = MATURITY_STABLE;            // This version's maturity level.
