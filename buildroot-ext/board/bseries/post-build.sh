#!/usr/bin/env bash
# Post-build: turns the target directory into the appliance's initramfs layout.
# $1 is buildroot's TARGET_DIR.
set -euo pipefail
target=$1

# The kernel starts /init; ours is appliance-init (buildroot's cpio step keeps an /init
# that exists instead of adding its own).
ln -sfn usr/bin/appliance-init "$target/init"
# The mount points init uses; /data is the data partition.
install -d -m 0755 "$target/data" "$target/run"
install -d -m 1777 "$target/tmp"
# No shell and no getty: nothing should point at one.
rm -f "$target/etc/inittab"
