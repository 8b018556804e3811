#!/usr/bin/env bash
# Builds the network boot matrix: small Azure-like Debian disks (Gen1: MBR, BIOS grub) whose
# network is configured the ways real Azure fleets have it, each pinned to the Hyper-V NIC (its
# MAC address 00:0d:3a:5e:21:7c, or the name eth0 that the hv_netvsc NIC always had on Azure,
# where it has no PCI path for a predictable name). On KVM the NIC is virtio-net on PCI, with
# another MAC and a predictable name (enp0s2 / enp1s0), so unfixed each boots without network:
#   OUT/d12-ifupdown.raw   Debian 12, ifupdown: `allow-hotplug eth0` + `iface eth0 inet dhcp`
#                          in interfaces.d (sourced), 70-persistent-net.rules pinning eth0 to
#                          the Hyper-V MAC
#   OUT/d12-networkd.raw   Debian 12, systemd-networkd: a .network file matching the old MAC
#   OUT/d12-nm.raw         Debian 12, NetworkManager: a keyfile with interface-name=eth0 and the
#                          old mac-address; no-auto-default=* as server images set it
#   OUT/d11-ifupdown.raw   Debian 11, ifupdown: `auto eth0` in /etc/network/interfaces, and a
#                          systemd .link file pinning eth0 to the old MAC
# All four carry ifupdown, NetworkManager and systemd-networkd, with exactly one enabled: the
# fix-ups must find the stack that is in use, not assume one. Unlike build-image.sh's disks
# their initramfs carries virtio (MODULES=most), so an unfixed guest boots on virtio and fails
# only at the network.
# h2k-report.service prints the interfaces, the kernel command line and the IPv4 address the
# guest got within 60 s of starting (or "none") on the serial console.
#
# Usage: build-netmatrix.sh OUT   (as root; needs debootstrap, sfdisk and mke2fs, see .ci/guest-setup.sh)
set -euo pipefail

out=$1
mkdir -p "$out"
work="$out/work"
rm -rf "$work"
mkdir -p "$work"

# The machine's own Debian mirror, as .ci/guest-setup.sh found it in the apt configuration.
mirror=${H2K_DEBIAN_MIRROR:-}
[[ -n $mirror ]] || { echo "build-netmatrix: H2K_DEBIAN_MIRROR is not set (. .ci/guest-setup.sh sets it)" >&2; exit 1; }

MAC=00:0d:3a:5e:21:7c
t0=$SECONDS

# One root tree per release, with every network stack installed and none enabled yet.
build_release() {
  local suite=$1 rootfs="$work/$1"
  local t=$SECONDS
  debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$work/$suite-debootstrap.log" 2>&1 ||
    { tail -n 30 "$work/$suite-debootstrap.log" >&2; return 1; }
  mount -t proc proc "$rootfs/proc"
  local rc=0
  chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends \
    linux-image-cloud-amd64 initramfs-tools systemd-sysv udev kmod iproute2 \
    ifupdown isc-dhcp-client network-manager grub-pc-bin grub2-common >"$work/$suite-apt.log" 2>&1 || rc=$?
  if ((rc == 0)); then
    # Nothing enabled: each variant enables its own stack.
    chroot "$rootfs" systemctl disable NetworkManager.service networking.service \
      systemd-networkd.service >/dev/null 2>&1 || true
    rm -f "$rootfs/etc/systemd/system/network-online.target.wants/"* \
      "$rootfs/etc/systemd/system/sockets.target.wants/systemd-networkd.socket"
    local kver
    kver=$(basename "$(ls -d "$rootfs"/lib/modules/* | head -n 1)")
    # The default MODULES=most takes the virtio drivers; prove it, or an unfixed boot would
    # fail at the disk and prove nothing about the network.
    # (Listed first: `grep -q` in a pipe would stop reading early and fail it under pipefail.)
    local listing
    listing=$(chroot "$rootfs" lsinitramfs "/boot/initrd.img-$kver")
    for m in virtio_blk virtio_net virtio_pci; do
      grep -q "/$m.ko" <<<"$listing" ||
        { echo "build-netmatrix: $suite's initramfs lacks $m" >&2; rc=1; }
    done
    mkdir -p "$rootfs/boot/grub"
    cp -r "$rootfs/usr/lib/grub/i386-pc" "$rootfs/boot/grub/"
    chroot "$rootfs" grub-mkimage -O i386-pc -o /tmp/core.img -p '(hd0,msdos1)/boot/grub' \
      biosdisk part_msdos ext2 || rc=$?
    mv "$rootfs/tmp/core.img" "$work/$suite-core.img"
    cp "$rootfs/usr/lib/grub/i386-pc/boot.img" "$work/$suite-boot.img"
    chroot "$rootfs" apt-get clean
  else
    tail -n 30 "$work/$suite-apt.log" >&2
  fi
  umount "$rootfs/proc"
  ((rc == 0)) || return 1

  echo azure-vm >"$rootfs/etc/hostname"
  cat >"$rootfs/etc/default/grub" <<'GRUB'
GRUB_DEFAULT=0
GRUB_TIMEOUT=1
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT="quiet"
GRUB_CMDLINE_LINUX="console=tty1 console=ttyS0,115200n8 earlyprintk=ttyS0,115200"
GRUB_TERMINAL="serial console"
GRUB_SERIAL_COMMAND="serial --speed=115200 --unit=0 --word=8 --parity=no --stop=1"
GRUB_DISABLE_RECOVERY=true
GRUB_DISABLE_OS_PROBER=true
GRUB
  cat >"$rootfs/usr/local/sbin/h2k-report" <<'REPORT'
#!/bin/sh
for _ in $(seq 60); do
  addr=$(ip -4 -o addr show scope global | awk '{ print $2 " " $4 }' | head -n 1)
  [ -n "$addr" ] && break
  sleep 1
done
# One write, before the serial getty starts: its hangup of ttyS0 once swallowed a line.
printf 'H2K-NICS: %s\nH2K-CMDLINE: %s\nH2K-IP: %s\n' \
  "$(ls /sys/class/net | tr '\n' ' ')" "$(cat /proc/cmdline)" "${addr:-none}" >/dev/ttyS0
REPORT
  chmod 755 "$rootfs/usr/local/sbin/h2k-report"
  cat >"$rootfs/etc/systemd/system/h2k-report.service" <<'UNIT'
[Unit]
Description=hyper2kvm boot test: report interfaces, address and command line on the serial console
After=network.target
Before=serial-getty@ttyS0.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/h2k-report

[Install]
WantedBy=multi-user.target
UNIT
  chroot "$rootfs" systemctl enable h2k-report.service >/dev/null 2>&1
  echo "build-netmatrix: $suite root tree in $((SECONDS - t)) s"
}

# A variant: a copy of the release's tree with its stack configured and enabled, as a tarball.
variant() {
  local name=$1 suite=$2
  local rootfs="$work/$name"
  cp -a "$work/$suite" "$rootfs"
  case $name in
    d12-ifupdown)
      cat >"$rootfs/etc/network/interfaces" <<'ENI'
# This file describes the network interfaces available on your system
# and how to activate them. For more information, see interfaces(5).

source /etc/network/interfaces.d/*

# The loopback network interface
auto lo
iface lo inet loopback
ENI
      cat >"$rootfs/etc/network/interfaces.d/50-cloud-init" <<'ENI'
# This file is generated from information provided by the datasource.  Changes
# to it will not persist across an instance reboot.
allow-hotplug eth0
iface eth0 inet dhcp
ENI
      cat >"$rootfs/etc/udev/rules.d/70-persistent-net.rules" <<RULES
# This file was automatically generated by the /lib/udev/write_net_rules
# program, run by the persistent-net-generator.rules rules file.
#
# You can modify it, as long as you keep each rule on a single
# line, and change only the value of the NAME= key.

# PCI device 0x1414:0x0000 (hv_netvsc)
SUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", ATTR{address}=="$MAC", ATTR{dev_id}=="0x0", ATTR{type}=="1", KERNEL=="eth*", NAME="eth0"
RULES
      chroot "$rootfs" systemctl enable networking.service >/dev/null 2>&1
      ;;
    d12-networkd)
      mkdir -p "$rootfs/etc/systemd/network"
      cat >"$rootfs/etc/systemd/network/10-azure-eth0.network" <<NETWORK
[Match]
MACAddress=$MAC

[Network]
DHCP=ipv4
NETWORK
      chroot "$rootfs" systemctl enable systemd-networkd.service >/dev/null 2>&1
      ;;
    d12-nm)
      mkdir -p "$rootfs/etc/NetworkManager/conf.d" "$rootfs/etc/NetworkManager/system-connections"
      printf '[main]\nno-auto-default=*\n' >"$rootfs/etc/NetworkManager/conf.d/00-server.conf"
      cat >"$rootfs/etc/NetworkManager/system-connections/azure-eth0.nmconnection" <<KEYFILE
[connection]
id=azure eth0
uuid=1dd9a779-d327-56e1-8454-c65e2556c12c
type=ethernet
interface-name=eth0

[ethernet]
mac-address=${MAC^^}

[ipv4]
method=auto

[ipv6]
method=ignore
KEYFILE
      chmod 600 "$rootfs/etc/NetworkManager/system-connections/azure-eth0.nmconnection"
      chroot "$rootfs" systemctl enable NetworkManager.service >/dev/null 2>&1
      ;;
    d11-ifupdown)
      cat >"$rootfs/etc/network/interfaces" <<'ENI'
# The loopback network interface
auto lo
iface lo inet loopback

# The primary network interface
auto eth0
iface eth0 inet dhcp
ENI
      mkdir -p "$rootfs/etc/systemd/network"
      cat >"$rootfs/etc/systemd/network/10-persistent-net.link" <<LINK
[Match]
MACAddress=$MAC

[Link]
Name=eth0
LINK
      chroot "$rootfs" systemctl enable networking.service >/dev/null 2>&1
      ;;
  esac
  tar -C "$rootfs" --numeric-owner -cf "$work/$name.tar" .
  rm -rf "$rootfs"
}

build_release bookworm
build_release bullseye
for v in d12-ifupdown:bookworm d12-networkd:bookworm d12-nm:bookworm d11-ifupdown:bullseye; do
  variant "${v%%:*}" "${v##*:}"
done
rm -rf "$work/bookworm" "$work/bullseye"

# Partition, format and fill each disk on the host, without an appliance: sfdisk writes the
# MBR into the image file, mke2fs builds the root file system from the tree at the partition's
# offset (-d, -E offset), and grub's images go where grub-install would put them. grub.cfg is
# written by hand, as update-grub would for this one kernel (update-grub needs the disk as a
# block device; `hyper2kvm fix` runs it in libguestfs' appliance when it changes the command
# line, which is part of what the test proves).
t=$SECONDS
for name in d12-ifupdown d12-networkd d12-nm d11-ifupdown; do
  suite=bookworm
  [[ $name == d11-* ]] && suite=bullseye
  tree="$work/$name-tree"
  mkdir -p "$tree"
  tar -C "$tree" --numeric-owner -xf "$work/$name.tar"
  rm "$work/$name.tar"
  uuid=$(cat /proc/sys/kernel/random/uuid)
  kver=$(basename "$(ls -d "$tree"/lib/modules/* | head -n 1)")
  printf 'UUID=%s / ext4 defaults,discard,errors=remount-ro 0 1\n' "$uuid" >"$tree/etc/fstab"
  cat >"$tree/boot/grub/grub.cfg" <<GRUBCFG
set timeout=1
serial --speed=115200 --unit=0 --word=8 --parity=no --stop=1
terminal_input serial console
terminal_output serial console
insmod part_msdos
insmod ext2
search --no-floppy --fs-uuid --set=root $uuid
menuentry 'Debian GNU/Linux' {
  linux /boot/vmlinuz-$kver root=UUID=$uuid ro console=tty1 console=ttyS0,115200n8 earlyprintk=ttyS0,115200 quiet
  initrd /boot/initrd.img-$kver
}
GRUBCFG
  disk="$work/$name.raw"
  truncate -s 2G "$disk"
  printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk -q "$disk"
  mke2fs -q -F -t ext4 -L cloudimg-rootfs -U "$uuid" -d "$tree" -E offset=$((2048 * 512)) \
    "$disk" $(((2 * 1024 * 1024 - 1024) ))k
  rm -rf "$tree"
  dd if="$work/$suite-boot.img" of="$disk" bs=440 count=1 conv=notrunc status=none
  dd if="$work/$suite-core.img" of="$disk" bs=512 seek=1 conv=notrunc status=none
  mv "$disk" "$out/"
done
echo "build-netmatrix: disks in $((SECONDS - t)) s"
rm -rf "$work"
echo "build-netmatrix: done in $((SECONDS - t0)) s"
