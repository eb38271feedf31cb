"""Crash-safe blue-green upgrades and rollbacks of Moodle: the frozen phase as one program.

Run as root on the Moodle host by the moodle_bluegreen role::

    python -m ltihub.upgrade {upgrade,rollback,status,resume} --config PATH

Every step is journaled (``journal``), every operation holds an flock (``journal.locked``),
an interrupted operation is finished or undone on the next start (``engine``). Standard
library only.
"""
