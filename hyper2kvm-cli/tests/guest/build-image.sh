#!/usr/bin/env bash
# Builds two small Azure-like Debian 12 disks for the guest boot test:
#   OUT/gen1.raw  Azure Gen1: MBR, one ext4 root, BIOS grub in the MBR gap
#   OUT/gen2.raw  Azure Gen2: GPT, EFI system partition + ext4 root, grub-efi at the removable path EFI/BOOT/BOOTX64.EFI
# Both carry what makes a migrated Azure disk fail on KVM:
#   * an initramfs with the Hyper-V drivers only (MODULES=list, as a host-only initramfs built on
#     Azure has): no virtio_blk, so on a virtio disk the root file system is never found;
#   * cloud-init's netplan file matching the Hyper-V NIC (driver hv_netvsc, a MAC, set-name eth0),
#     as Debian 12 cloud images render it (netplan + systemd-networkd);
#   * rootdelay=300 and Azure's serial console settings on the kernel command line;
#   * the resource-disk fstab line cloud-init writes, and (Gen1) the root mounted as /dev/sda1;
#   * an Azure agent stand-in (walinuxagent.service), Azure's udev rules, cloud-init's Azure
#     datasource.
# Plus what the test reads on the serial console: h2k-report.service prints the IPv4 address the
# guest got (or that it got none) and the kernel command line.
#
# Usage: build-image.sh OUT   (as root; needs debootstrap and libguestfs, see .ci/guest-setup.sh)
# The Debian mirror is the machine's own (H2K_DEBIAN_MIRROR, else read from the apt config).
set -euo pipefail

out=$1
mkdir -p "$out"
work="$out/work"
rm -rf "$work"
mkdir -p "$work"
rootfs="$work/rootfs"

mirror=${H2K_DEBIAN_MIRROR:-}
if [[ -z $mirror ]]; then
  # The same lookup as .ci/guest-setup.sh: the first enabled deb source serving bookworm.
  mirror=$(
    {
      for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $f ]] && awk '$1 == "deb" && $3 == "bookworm" { print $2 }' "$f"
      done
      for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] && awk 'BEGIN { RS = ""; FS = "\n" }
          { u = s = ""; for (i = 1; i <= NF; i++) {
              if ($i ~ /^URIs:/) u = substr($i, 6); if ($i ~ /^Suites:/) s = " " substr($i, 8) " " }
            if (s ~ /[ \t]bookworm[ \t]/) { split(u, a, /[ \t]+/); for (j in a) if (a[j] != "") { print a[j]; break } } }' "$f"
      done
    } | head -n 1
  )
fi
[[ -n $mirror ]] || { echo "build-image: no Debian bookworm mirror in the apt configuration" >&2; exit 1; }

t0=$SECONDS
debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
  { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
echo "build-image: debootstrap in $((SECONDS - t0)) s"

mount -t proc proc "$rootfs/proc"
trap 'umount "$rootfs/proc" 2>/dev/null || true' EXIT
in_root() { chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@"; }

# The initramfs a host-only build on Azure leaves: Hyper-V storage and network drivers, no virtio.
mkdir -p "$rootfs/etc/initramfs-tools/conf.d"
echo 'MODULES=list' >"$rootfs/etc/initramfs-tools/conf.d/azure-hostonly.conf"
mkdir -p "$rootfs/etc/initramfs-tools"
cat >"$rootfs/etc/initramfs-tools/modules" <<'MODULES'
# List of modules that you want to include in your initramfs.
# They will be loaded at boot time in the order below.
hv_vmbus
hv_storvsc
hv_netvsc
sd_mod
crc32c_generic
MODULES

t1=$SECONDS
in_root apt-get install -y -q --no-install-recommends \
  linux-image-cloud-amd64 initramfs-tools systemd-sysv udev kmod iproute2 netplan.io \
  grub-pc-bin grub-efi-amd64-bin grub2-common >"$work/apt.log" 2>&1 ||
  { tail -n 30 "$work/apt.log" >&2; exit 1; }
echo "build-image: kernel and packages in $((SECONDS - t1)) s"
kver=$(basename "$(ls -d "$rootfs"/lib/modules/* | head -n 1)")
# The kernel package's hook built the initramfs with the settings above; rebuild to be sure and
# prove virtio is genuinely absent: otherwise the unfixed image would boot and prove nothing.
in_root update-initramfs -u -k all >"$work/initramfs.log" 2>&1
if in_root lsinitramfs "/boot/initrd.img-$kver" | grep -E 'virtio_(blk|pci|scsi)'; then
  echo "build-image: the initramfs contains virtio drivers" >&2
  exit 1
fi
grep -q '^CONFIG_VIRTIO_BLK=m' "$rootfs/boot/config-$kver" ||
  { echo "build-image: virtio_blk is built into $kver" >&2; exit 1; }
# grub's boot images, made here with the guest's own grub-mkimage: grub-install cannot embed
# into a disk it sees through libguestfs ("embedding is not possible ... cross-disk install"),
# and this machine's loop devices show no partitions. What grub-install would write, by hand:
# the modules under /boot/grub, the BIOS core image after the MBR, the EFI image on the ESP.
mkdir -p "$rootfs/boot/grub"
cp -r "$rootfs/usr/lib/grub/i386-pc" "$rootfs/usr/lib/grub/x86_64-efi" "$rootfs/boot/grub/"
in_root grub-mkimage -O i386-pc -o /tmp/core.img -p '(hd0,msdos1)/boot/grub' biosdisk part_msdos ext2
in_root grub-mkimage -O x86_64-efi -o /tmp/BOOTX64.EFI -p '(hd0,gpt2)/boot/grub' part_gpt ext2 fat
mv "$rootfs/tmp/core.img" "$rootfs/tmp/BOOTX64.EFI" "$work/"
cp "$rootfs/usr/lib/grub/i386-pc/boot.img" "$work/"
umount "$rootfs/proc"
trap - EXIT

echo azure-vm >"$rootfs/etc/hostname"
cat >"$rootfs/etc/default/grub" <<'GRUB'
# If you change this file, run 'update-grub' afterwards to update
# /boot/grub/grub.cfg.
GRUB_DEFAULT=0
GRUB_TIMEOUT=1
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT="quiet"
GRUB_CMDLINE_LINUX="console=tty1 console=ttyS0,115200n8 earlyprintk=ttyS0,115200 rootdelay=300"
GRUB_TERMINAL="serial console"
GRUB_SERIAL_COMMAND="serial --speed=115200 --unit=0 --word=8 --parity=no --stop=1"
GRUB_DISABLE_RECOVERY=true
GRUB_DISABLE_OS_PROBER=true
GRUB

mkdir -p "$rootfs/etc/netplan"
cat >"$rootfs/etc/netplan/50-cloud-init.yaml" <<'NETPLAN'
# This file is generated from information provided by the datasource.  Changes
# to it will not persist across an instance reboot.  To disable cloud-init's
# network configuration capabilities, write a file
# /etc/cloud/cloud.cfg.d/99-disable-network-config.cfg with the following:
# network: {config: disabled}
network:
    ethernets:
        eth0:
            dhcp4: true
            dhcp4-overrides:
                route-metric: 100
            dhcp6: false
            match:
                driver: hv_netvsc
                macaddress: 00:0d:3a:5e:21:7c
            set-name: eth0
    version: 2
NETPLAN
chmod 600 "$rootfs/etc/netplan/50-cloud-init.yaml"

mkdir -p "$rootfs/etc/cloud/cloud.cfg.d"
cat >"$rootfs/etc/cloud/cloud.cfg.d/90_dpkg.cfg" <<'CLOUD'
# to update this file, run dpkg-reconfigure cloud-init
datasource_list: [ Azure ]
CLOUD

mkdir -p "$rootfs/etc/udev/rules.d"
cat >"$rootfs/etc/udev/rules.d/66-azure-storage.rules" <<'UDEV'
# Azure specific rules.
ACTION!="add|change", GOTO="walinuxagent_end"
SUBSYSTEM!="block", GOTO="walinuxagent_end"
ATTRS{ID_VENDOR}!="Msft", GOTO="walinuxagent_end"
ATTRS{ID_MODEL}!="Virtual_Disk", GOTO="walinuxagent_end"
ENV{DEVTYPE}=="partition", PROGRAM="/bin/sh -c 'readlink /sys/class/block/%k/../device|cut -d: -f4'", ENV{fabric_name}="root"
LABEL="walinuxagent_end"
UDEV
cat >"$rootfs/etc/udev/rules.d/68-azure-sriov-nm-unmanaged.rules" <<'UDEV'
# Accelerated Networking on Azure exposes a new SRIOV interface to the VM.
# This interface is transparently bonded to the synthetic interface,
# so NetworkManager should just ignore any SRIOV interfaces.
SUBSYSTEM=="net", DRIVERS=="hv_pci", ACTION=="add", ENV{NM_UNMANAGED}="1"
UDEV

# The Azure agent, as a stand-in: it announces itself on the console, so the boot test sees
# whether the fix-up disabled it.
cat >"$rootfs/etc/systemd/system/walinuxagent.service" <<'UNIT'
[Unit]
Description=Azure Linux Agent (hyper2kvm boot-test stand-in)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart=/bin/sh -c 'echo "H2K-AGENT: walinuxagent started" >/dev/ttyS0; exec sleep infinity'

[Install]
WantedBy=multi-user.target
UNIT

# What the test reads: the DHCP address (waiting for it up to 90 s) and the command line.
cat >"$rootfs/usr/local/sbin/h2k-report" <<'REPORT'
#!/bin/sh
for _ in $(seq 90); do
  addr=$(ip -4 -o addr show scope global | awk '{ print $2 " " $4 }' | head -n 1)
  [ -n "$addr" ] && break
  sleep 1
done
# One write, before the serial getty starts: its hangup of ttyS0 once swallowed a line.
printf 'H2K-CMDLINE: %s\nH2K-IP: %s\n' "$(cat /proc/cmdline)" "${addr:-none}" >/dev/ttyS0
REPORT
chmod 755 "$rootfs/usr/local/sbin/h2k-report"
cat >"$rootfs/etc/systemd/system/h2k-report.service" <<'UNIT'
[Unit]
Description=hyper2kvm boot test: report address and command line on the serial console
After=systemd-networkd.service
Before=serial-getty@ttyS0.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/h2k-report

[Install]
WantedBy=multi-user.target
UNIT
in_root systemctl enable walinuxagent.service h2k-report.service systemd-networkd.service >/dev/null 2>&1
# A login prompt without a password prompt to follow is all the test needs; no root password.
in_root apt-get clean
tar -C "$rootfs" --numeric-owner -cf "$work/rootfs.tar" .
echo "build-image: root tree $(du -sh "$work/rootfs.tar" | cut -f1)"

# Partition, format, copy the tree in and install grub, through libguestfs (no loop devices or
# mounts on the host). The fstab names what each generation's Azure image would.
root_uuid=$(cat /proc/sys/kernel/random/uuid)
t2=$SECONDS
guestfish -N "$work/gen1.raw=disk:2G" <<GF
part-init /dev/sda mbr
part-add /dev/sda p 2048 -1
part-set-bootable /dev/sda 1 true
mkfs ext4 /dev/sda1 label:cloudimg-rootfs
set-uuid /dev/sda1 $root_uuid
mount /dev/sda1 /
tar-in $work/rootfs.tar /
write /etc/fstab "/dev/sda1 / ext4 defaults,discard,errors=remount-ro 0 1\n/dev/disk/cloud/azure_resource-part1\t/mnt\tauto\tdefaults,nofail,x-systemd.requires=cloud-init.service,_netdev,comment=cloudconfig\t0\t2\n"
rm-rf /boot/grub/x86_64-efi
command "update-grub"
GF
# The MBR's boot code (not its partition table: 440 bytes) and the core image after it. The
# images' defaults (core at sector 1, its length recorded by grub-mkimage) are what fits.
dd if="$work/boot.img" of="$work/gen1.raw" bs=440 count=1 conv=notrunc status=none
dd if="$work/core.img" of="$work/gen1.raw" bs=512 seek=1 conv=notrunc status=none
echo "build-image: gen1 disk in $((SECONDS - t2)) s"

t3=$SECONDS
guestfish -N "$work/gen2.raw=disk:2G" <<GF
part-init /dev/sda gpt
part-add /dev/sda p 2048 206847
part-add /dev/sda p 206848 -34
part-set-gpt-type /dev/sda 1 C12A7328-F81F-11D2-BA4B-00A0C93EC93B
mkfs vfat /dev/sda1 label:UEFI
mkfs ext4 /dev/sda2 label:cloudimg-rootfs
set-uuid /dev/sda2 $root_uuid
mount /dev/sda2 /
tar-in $work/rootfs.tar /
mkdir-p /boot/efi
mount /dev/sda1 /boot/efi
write /etc/fstab "UUID=$root_uuid / ext4 defaults,discard,errors=remount-ro 0 1\n/dev/sda1 /boot/efi vfat umask=0077 0 1\n/dev/disk/cloud/azure_resource-part1\t/mnt\tauto\tdefaults,nofail,x-systemd.requires=cloud-init.service,_netdev,comment=cloudconfig\t0\t2\n"
rm-rf /boot/grub/i386-pc
mkdir-p /boot/efi/EFI/BOOT
upload $work/BOOTX64.EFI /boot/efi/EFI/BOOT/BOOTX64.EFI
command "update-grub"
GF
echo "build-image: gen2 disk in $((SECONDS - t3)) s"

mv "$work/gen1.raw" "$work/gen2.raw" "$out/"
echo "$kver" >"$out/kernel-version"
rm -rf "$work"
echo "build-image: done in $((SECONDS - t0)) s"
