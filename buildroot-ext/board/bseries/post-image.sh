#!/usr/bin/env bash
# Post-image: lays out appliance.img with genimage (board/bseries/genimage.cfg), the same
# GPT layout as `make disk-image`: ESP with the EFI-stub kernel (initramfs linked in) at
# EFI/BOOT/BOOTX64.EFI, firmware slots A and B, blank data partition, last MiB free.
# $1 is buildroot's BINARIES_DIR.
set -euo pipefail
board=$(dirname "$(readlink -f "$0")")
exec support/scripts/genimage.sh -c "$board/genimage.cfg"
