#!/usr/bin/env bash
# Fetches the signed first stages of Debian 12's secure-boot chain for the Trusted Launch boot
# test, from the machine's own apt sources (nothing is installed on the host):
#   OUT/shimx64.efi.signed   shim, signed by Microsoft's UEFI CA (package shim-signed)
#   OUT/grubx64.efi.signed   grub, signed by Debian, trusted by shim (grub-efi-amd64-signed)
# The test's base Gen2 image already carries Debian's signed cloud kernel.
#
# Usage: fetch-secureboot.sh OUT
set -euo pipefail

out=$1
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
# apt-get download writes into the current directory; as root it warns that _apt cannot
# write there, which is harmless.
apt-get download shim-signed grub-efi-amd64-signed >apt.log 2>&1 ||
  { cat apt.log >&2; exit 1; }
for deb in ./*.deb; do
  dpkg-deb -x "$deb" tree
done
cp tree/usr/lib/shim/shimx64.efi.signed "$out/"
cp tree/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed "$out/"
ls ./*.deb | sed 's|^\./||' >"$out/packages"
echo "fetch-secureboot: $(tr '\n' ' ' <"$out/packages")"
