<?php
// TEST STAND-IN for Moodle -- NOT Moodle. Same variables as Moodle's version.php.
// Stand-in release 2-broken: its upgrade step 2024100702 fails half way on purpose.

defined('MOODLE_INTERNAL') || die();

$version  = 2024100702.00;              // YYYYMMDD      = weekly release date of this DEV branch.
                                        //         RR    = release increments - 00 in DEV branches.
                                        //           .XX = incremental changes.
$release  = '4.5.2 (Build: 20250210)';  // Human-friendly version name
$branch   = '405';                      // This version's branch.
$maturity = MATURITY_STABLE;            // This version's maturity level.
