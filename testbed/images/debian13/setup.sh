#!/bin/sh
# Runs inside the fresh debootstrap root (chroot) before it is imported into Docker.
# $1 = apt mirror URI read from the build machine's own apt configuration, $2 = suite.
set -eu
mirror="$1"
suite="$2"
printf 'deb %s %s main\ndeb %s %s-updates main\n' "$mirror" "$suite" "$mirror" "$suite" \
  > /etc/apt/sources.list
# Units that make no sense in a container, or that hang without a console or udev.
for unit in getty@tty1.service console-getty.service systemd-udevd.service \
    systemd-udev-trigger.service systemd-modules-load.service sys-kernel-config.mount \
    sys-kernel-debug.mount sys-kernel-tracing.mount systemd-remount-fs.service; do
  ln -sf /dev/null "/etc/systemd/system/$unit"
done
# Each container must get a machine id of its own at first boot.
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/*.log
# No package lists in the image: make apt consumers (Ansible's cache_valid_time) see
# them as stale, so the first converge refreshes them.
rm -f /var/lib/apt/periodic/update-success-stamp
mkdir -p /var/lib/apt/lists/partial
touch -d @0 /var/lib/apt/lists
