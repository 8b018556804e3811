#!/usr/bin/env bash
# Installs what the guest fix-ups and their boot test need on a Debian bookworm machine, and
# exports libguestfs' settings for a machine without a host kernel or KVM.
#
# Sourced by .ci/run (`. .ci/guest-setup.sh`), so its exports reach `cargo test`; it can also be
# run on its own to install (then source it, or copy the exports it prints, into your shell).
# See docs/guest.md for what each step is for.

# h2k_debian_mirror: the Debian archive this machine's apt is configured with.
. "$(dirname "${BASH_SOURCE[0]}")/debian-mirror.sh"

# Whether KVM really runs a guest: the appliance's kernel booted under KVM must reach its panic
# (no root file system; panic=-1 reboots, -no-reboot exits) within 20 s. Under TCG the same boot
# takes about 8 s on these machines; a broken KVM hangs or fails at once.
h2k_kvm_works() {
  local kernel=$1 log
  [[ -r /dev/kvm && -w /dev/kvm ]] || return 1
  log="$(mktemp)"
  timeout 20 qemu-system-x86_64 -accel kvm -machine q35 -cpu host -m 256 -nodefaults \
    -display none -no-reboot -serial "file:$log" -kernel "$kernel" \
    -append "console=ttyS0 panic=-1" >/dev/null 2>&1 || true
  local ok=1
  grep -q "Kernel panic" "$log" && ok=0
  rm -f "$log"
  return $ok
}

h2k_guest_setup() {
  local cache="${H2K_GUEST_CACHE:-$HOME/.cache/hyper2kvm-guest-images}"
  local start=$SECONDS
  local mirror
  mirror="$(h2k_debian_mirror)"
  if [[ -z $mirror ]]; then
    echo "guest-setup: no Debian bookworm source in the apt configuration" >&2
    return 1
  fi

  # qemu-system-x86 must be the exact version of the installed qemu-utils: both come from
  # one source package, and apt removes qemu-utils (and qemu-img with it) to resolve a mismatch.
  local qemu_version release=()
  qemu_version="$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)"
  # rhsrvany (the Windows first-boot service wrapper) is only in bookworm-backports.
  local want_bpo=()
  [[ -f /usr/share/virt-tools/rhsrvany.exe ]] || want_bpo+=(rhsrvany)
  if [[ $qemu_version == *bpo12* ]]; then
    release=(-t bookworm-backports)
  fi
  if [[ $qemu_version == *bpo12* ]] || ((${#want_bpo[@]})); then
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
      echo "guest-setup: adding bookworm-backports from $mirror"
      echo "deb $mirror bookworm-backports main" >/etc/apt/sources.list.d/hyper2kvm-backports.list
    fi
  fi

  local want=()
  command -v debootstrap >/dev/null || want+=(debootstrap)
  command -v guestfish >/dev/null || want+=(libguestfs-tools)
  [[ -f /usr/share/OVMF/OVMF_CODE_4M.fd && -f /usr/share/OVMF/OVMF_CODE_4M.ms.fd ]] || want+=(ovmf)
  # The Trusted Launch boot test puts Debian's signed loaders on a disk's ESP with mtools.
  command -v mcopy >/dev/null || want+=(mtools)
  command -v mkfs.vfat >/dev/null || want+=(dosfstools)
  command -v sfdisk >/dev/null || want+=(fdisk)
  [[ -x /usr/sbin/depmod || -x /sbin/depmod ]] || want+=(kmod)
  # The Windows fix-ups edit hives with hivex's tools; their test builds a virtio-win ISO
  # (xorriso) and compares with virt-v2v's injection.
  command -v hivexsh >/dev/null || want+=(libhivex-bin)
  command -v hivexregedit >/dev/null || want+=(libwin-hivex-perl)
  command -v xorriso >/dev/null || want+=(xorriso)
  command -v python3 >/dev/null || want+=(python3)
  command -v virt-v2v >/dev/null || want+=(virt-v2v)
  command -v nbdkit >/dev/null || want+=(nbdkit)
  # virt-v2v copies the disk with nbdcopy, which bookworm's virt-v2v neither depends on nor
  # recommends: without it the copy step fails ("nbdcopy command failed").
  command -v nbdcopy >/dev/null || want+=(libnbd-bin)
  if ((${#want[@]} + ${#want_bpo[@]})) || ! command -v qemu-system-x86_64 >/dev/null; then
    apt-get update -qq
    export DEBIAN_FRONTEND=noninteractive
    if ! command -v qemu-system-x86_64 >/dev/null; then
      if [[ -n $qemu_version ]]; then
        echo "guest-setup: installing qemu-system-x86=$qemu_version ${release[*]}"
        apt-get install -y -qq "${release[@]}" "qemu-system-x86=$qemu_version" >/dev/null
      else
        apt-get install -y -qq qemu-system-x86 qemu-utils >/dev/null
      fi
    fi
    if ((${#want[@]})); then
      echo "guest-setup: installing ${want[*]}"
      apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
    fi
    if ((${#want_bpo[@]})); then
      echo "guest-setup: installing ${want_bpo[*]} from bookworm-backports"
      apt-get install -y -qq --no-install-recommends -t bookworm-backports "${want_bpo[@]}" >/dev/null
    fi
  fi
  # The whole point of pinning: qemu-img must have survived.
  qemu-img --version | head -n 1
  qemu-system-x86_64 --version | head -n 1

  # libguestfs boots a small appliance built by supermin from the host's own kernel, and this
  # machine has none (/boot is empty, /lib/modules absent). Give it Debian's cloud kernel,
  # unpacked from its package into the cache (the kernel package the boot test's guest installs).
  local kdir="$cache/supermin-kernel"
  if [[ ! -f $kdir/.complete ]]; then
    local pkg tmp
    pkg="$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ && !p { print $2; p = 1 }')"
    tmp="$(mktemp -d)"
    (cd "$tmp" && apt-get download -q "$pkg" >/dev/null 2>&1 || apt-get download "$pkg")
    rm -rf "$kdir" && mkdir -p "$kdir"
    dpkg-deb -x "$tmp"/*.deb "$kdir"
    rm -rf "$tmp"
    # The package leaves modules.dep to its postinst; supermin needs it to pick modules.
    local unpacked=("$kdir"/lib/modules/*)
    depmod -b "$kdir" "${unpacked[0]##*/}"
    touch "$kdir/.complete"
  fi
  local modules=("$kdir"/lib/modules/*)
  local kver="${modules[0]##*/}"
  export SUPERMIN_KERNEL="$kdir/boot/vmlinuz-$kver"
  export SUPERMIN_MODULES="$kdir/lib/modules/$kver"
  export SUPERMIN_KERNEL_VERSION="$kver"
  # supermin reads the host's module directory even when told to use another kernel.
  mkdir -p /lib/modules
  # No libvirt daemon here: qemu directly. KVM only where a probe boot under it finishes: a
  # /dev/kvm can exist and still fail (a nested kvm-pvm host stopped guests with
  # INTERNAL_ERROR, and hung libguestfs' appliance), so the node alone decides nothing.
  export LIBGUESTFS_BACKEND=direct
  if h2k_kvm_works "$SUPERMIN_KERNEL"; then
    export H2K_ACCEL=kvm
    unset LIBGUESTFS_BACKEND_SETTINGS
    echo "guest-setup: KVM works (a probe boot finished); libguestfs and the boot tests use it"
  else
    export H2K_ACCEL=tcg
    export LIBGUESTFS_BACKEND_SETTINGS=force_tcg
    echo "guest-setup: KVM is not usable here; libguestfs and the boot tests use software emulation (TCG)"
  fi
  export H2K_DEBIAN_MIRROR="$mirror"
  echo "guest-setup: ready in $((SECONDS - start)) s (kernel $kver)"
  echo "export SUPERMIN_KERNEL=$SUPERMIN_KERNEL SUPERMIN_MODULES=$SUPERMIN_MODULES SUPERMIN_KERNEL_VERSION=$kver LIBGUESTFS_BACKEND=direct H2K_ACCEL=$H2K_ACCEL${LIBGUESTFS_BACKEND_SETTINGS:+ LIBGUESTFS_BACKEND_SETTINGS=$LIBGUESTFS_BACKEND_SETTINGS}"
}

h2k_guest_setup
