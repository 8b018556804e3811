#!/usr/bin/env bash
# CI: build the repository's Dockerfile with podman and check the image, on a machine that
# reaches no container registry (only Debian's archive).
#
# 1. The base image `debian:bookworm-slim` is made here: debootstrap (minbase) from the
#    Debian archive the host's apt is configured with, imported into podman and tagged
#    docker.io/library/debian:bookworm-slim, so that the Dockerfile's FROM resolves locally
#    (podman build --pull=never). Its tarball is cached in $H2K_CONTAINER_CACHE (default
#    ~/.cache/hyper2kvm-container), keyed by this script and the archive's address.
# 2. The image is built with the release binary (`--build-arg BINARY_FROM=prebuilt`, the
#    binary alone in a context folder): no Rust image needed.
# 3. Checks: runs as uid 10001; --version and --help; the tools the guest fix-ups use are
#    inside; a simulator (`hyper2kvm sim`, in a container) is listed and one of its VMs is
#    migrated into a mounted folder by the container, the image then checked with the host's
#    qemu-img; guestfish in the image boots its appliance and sees that disk.
# The image and the base are removed at the end; only the cached tarball stays. Where
# docker.io/library/debian:bookworm-slim exists already (pulled on a developer's machine),
# it is used as it is and left alone.
#
# Run as root on Debian bookworm with podman, runc, debootstrap and qemu-utils installed
# (.ci/run installs them). H2K_CONTAINER_BINARY names a release binary to use instead of
# building one with cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
. .ci/debian-mirror.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hyper2kvm-target}"
cache="${H2K_CONTAINER_CACHE:-$HOME/.cache/hyper2kvm-container}"
base=localhost/hyper2kvm-ci-base:bookworm
image=localhost/hyper2kvm-ci:latest
work="$(mktemp -d "${TMPDIR:-/tmp}/hyper2kvm-container.XXXXXX")"
sim=hyper2kvm-ci-sim-$$

cleanup() {
  podman rm -f "$sim" >/dev/null 2>&1 || true
  podman rmi -f "$image" >/dev/null 2>&1 || true
  # The build's intermediate images: those that were not there before it.
  if [[ -f $work/images-before ]]; then
    podman images -a -q --no-trunc | sort -u | comm -13 "$work/images-before" - |
      xargs -r podman rmi -f >/dev/null 2>&1 || true
  fi
  if [[ -n ${own_base:-} ]]; then
    podman rmi -f docker.io/library/debian:bookworm-slim "$base" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
  [[ ${build_tmp:-/var/tmp} == /var/tmp ]] || rm -rf "$build_tmp"
}
trap cleanup EXIT

say() { echo "container: $* ($((SECONDS - start)) s)"; }

# --- 1. The base image -------------------------------------------------------------------
own_base=
if podman image exists docker.io/library/debian:bookworm-slim; then
  base=docker.io/library/debian:bookworm-slim
  say "using the debian:bookworm-slim this machine has"
else
# Else ours, made and imported by the rest of this section.
own_base=1
mirror="$(h2k_debian_mirror bookworm)"
updates="$(h2k_debian_mirror bookworm-updates)"
security="$(h2k_debian_mirror bookworm-security)"
if [[ -z $mirror ]]; then
  echo "container: no Debian bookworm source in the apt configuration" >&2
  exit 1
fi
key="$({ cat .ci/container.sh; echo "$mirror $updates $security"; } | sha256sum | cut -c1-16)"
tarball="$cache/debian-bookworm-minbase-$key.tar.gz"
if [[ ! -f $tarball ]]; then
  say "making the base image from $mirror"
  rootfs="$work/rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log"
    exit 1
  }
  # The official image's apt sources: deb822 in debian.sources, the main archive's stanza
  # first (the Dockerfile derives bookworm-backports from it), the same suites as this host.
  rm -f "$rootfs/etc/apt/sources.list"
  {
    suites=bookworm
    [[ -n $updates && $updates == "$mirror" ]] && suites+=" bookworm-updates"
    printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$mirror" "$suites"
    if [[ -n $updates && $updates != "$mirror" ]]; then
      printf '\nTypes: deb\nURIs: %s\nSuites: bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$updates"
    fi
    if [[ -n $security ]]; then
      printf '\nTypes: deb\nURIs: %s\nSuites: bookworm-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$security"
    fi
  } >"$rootfs/etc/apt/sources.list.d/debian.sources"
  # The official slim image's apt and dpkg settings (its builder, debuerreotype, writes the
  # same): downloaded packages deleted after installing, no translations, no documentation.
  # Without them the Dockerfile's install layer keeps every .deb it fetched.
  cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  echo 'Acquire::Languages "none";' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"
  echo 'Acquire::GzipIndexes "true";' >"$rootfs/etc/apt/apt.conf.d/docker-gzip-indexes"
  echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$rootfs/etc/apt/apt.conf.d/docker-autoremove-suggests"
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/man/*
EOF
  # What those excludes leave out, removed from what debootstrap installed. Only inside the
  # rootfs: a chroot, so that no path here can reach the host's files.
  chroot "$rootfs" sh -ec '
    find /usr/share/doc -mindepth 1 ! -type d ! -name copyright -delete
    find /usr/share/doc -mindepth 1 -type d -empty -delete
    find /usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
    rm -rf /usr/share/groff/* /usr/share/info/* /usr/share/linda/* /usr/share/lintian/overrides/* \
      /usr/share/man/* /var/cache/apt/archives/*.deb /var/cache/apt/*.bin /var/lib/apt/lists/*
  '
  mkdir -p "$cache"
  rm -f "$cache"/debian-bookworm-minbase-*.tar.gz
  tar --numeric-owner -C "$rootfs" -c . | gzip -1 >"$tarball.tmp"
  mv "$tarball.tmp" "$tarball"
  rm -rf "$rootfs"
  say "base image cached: $tarball ($(du -h "$tarball" | cut -f1))"
fi
podman import --quiet "$tarball" "$base" >/dev/null
podman tag "$base" docker.io/library/debian:bookworm-slim
say "base image imported"
fi

# How podman runs containers here. Machines like CI's have cgroup v1 with a controller on the
# cgroup2 mount too ("hybrid"), which crun refuses ("cgroups in hybrid mode not supported"),
# and no CAP_SYS_RESOURCE, so podman's default nofile/nproc limits (above the hard limits)
# cannot be set ("setrlimit RLIMIT_NOFILE: Operation not permitted"). Try the defaults first,
# then runc, then limits within the host's.
nofile="$(ulimit -Hn)"
[[ $nofile == unlimited || $nofile -gt 65536 ]] && nofile=65536
limits=(--ulimit "nofile=$nofile:$nofile" --ulimit nproc=4096:4096)
pm=() opts=()
found=
for attempt in default limits runc runc-limits; do
  case $attempt in
    default) pm=() opts=() ;;
    limits) pm=() opts=("${limits[@]}") ;;
    runc) pm=(--runtime runc) opts=() ;;
    runc-limits) pm=(--runtime runc) opts=("${limits[@]}") ;;
  esac
  if podman "${pm[@]}" run --rm --network none "${opts[@]}" "$base" true 2>"$work/probe-$attempt.log"; then
    found=$attempt
    break
  fi
done
if [[ -z $found ]]; then
  echo "container: podman cannot run a container here:" >&2
  tail -n 3 "$work"/probe-*.log >&2
  exit 1
fi
say "podman runs containers with: ${pm[*]} ${opts[*]:-(defaults)}"

# --- 2. The image ------------------------------------------------------------------------
binary="${H2K_CONTAINER_BINARY:-}"
if [[ -z $binary ]]; then
  cargo build --release --locked -p hyper2kvm-cli
  binary="$CARGO_TARGET_DIR/release/hyper2kvm"
fi
mkdir -p "$work/context"
cp "$binary" "$work/context/hyper2kvm"
# Host networking: apt in the build reaches the archive as the host does, without CNI.
# (Not --layers=false: podman 4.3 then fails a multi-stage build at its end, "identifier is
# not an image"; the intermediate images are removed on exit instead.)
# podman writes each layer it commits to a temporary file first (the install layer is about
# 1 GB): in memory when /dev/shm has room, a third off the build's peak disk use.
build_tmp=/var/tmp
shm_kb="$(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 { print $4 }' || true)"
if [[ $shm_kb =~ ^[0-9]+$ ]] && ((shm_kb > 4 * 1024 * 1024)); then
  build_tmp="$(mktemp -d /dev/shm/hyper2kvm-container.XXXXXX)"
fi
podman images -a -q --no-trunc | sort -u >"$work/images-before"
TMPDIR=$build_tmp podman "${pm[@]}" build --pull=never --network host "${opts[@]}" \
  --build-arg BINARY_FROM=prebuilt -f Dockerfile -t "$image" "$work/context" >"$work/build.log" 2>&1 || {
  tail -n 40 "$work/build.log"
  exit 1
}
rm -rf "$work/context"
[[ $build_tmp == /var/tmp ]] || rm -rf "$build_tmp"
say "image built: $(podman image inspect -f '{{.Size}}' "$image" | awk '{ printf "%.0f MB", $1 / 1e6 }')"

# --- 3. Checks ---------------------------------------------------------------------------
run() { podman "${pm[@]}" run --rm "${opts[@]}" "$@"; }
fail() {
  echo "container: FAILED: $*" >&2
  exit 1
}

uid="$(run --entrypoint id "$image" -u)"
[[ $uid == 10001 ]] || fail "the image runs as uid $uid, not 10001"
version="$(run "$image" --version)"
[[ $version == "$("$binary" --version)" ]] || fail "--version says '$version'"
# (Into a variable, not piped to grep -q: podman fails when grep stops reading early.)
help="$(run "$image" --help)" || fail "--help"
grep -q '^Usage: hyper2kvm' <<<"$help" || fail "--help says: $help"
# The tools the guest fix-ups call, the appliance's kernel, rhsrvany and its helper.
run --entrypoint sh "$image" -ec '
  for tool in guestfish virt-customize qemu-img qemu-system-x86_64 hivexsh hivexregedit ntfs-3g; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
  done
  ls /boot/vmlinuz-* >/dev/null
  test -f /usr/share/virt-tools/rhsrvany.exe
  test -f /usr/share/virt-tools/pnp_wait.exe
  test "$LIBGUESTFS_BACKEND" = direct
' || fail "tools in the image"
say "image runs as uid 10001, --version, --help, tools present"

# A simulated Azure with one small Linux VM (one OS disk, a few MiB written), served by the
# image on loopback, port picked by the kernel; then listed and migrated by the image.
mkdir -p "$work/sim" "$work/out"
cat >"$work/sim/scenario.yaml" <<'YAML'
subscriptions:
  - id: 00000000-0000-0000-0000-000000000000
    resource_groups:
      - name: rg-ci
        location: westeurope
        vms:
          - name: ci-01
            power_state: deallocated
            os_type: linux
            generation: 2
            disks:
              - { size_gb: 1, content: { seed: 1, scatter: { written_bytes: 8388608, extent_size: 1048576 } } }
YAML
podman "${pm[@]}" run -d --name "$sim" --network host "${opts[@]}" -v "$work/sim:/sim:ro" \
  "$image" sim --scenario /sim/scenario.yaml --listen 127.0.0.1:0 >/dev/null
endpoint=
for _ in $(seq 1 100); do
  endpoint="$(podman logs "$sim" 2>/dev/null | grep -m1 -o 'http://[^ ]*' || true)"
  [[ -n $endpoint ]] && break
  [[ "$(podman inspect -f '{{.State.Running}}' "$sim")" == true ]] || break
  sleep 0.1
done
[[ -n $endpoint ]] || { podman logs "$sim"; fail "the simulator did not start"; }
say "simulator in the image at $endpoint"

cat >"$work/sim/config.yaml" <<YAML
azure:
  subscriptions: ["00000000-0000-0000-0000-000000000000"]
  resource_groups: [rg-ci]
  arm_endpoint: $endpoint
  auth: none
output:
  dir: /out
  format: qcow2
YAML
# The container's user (uid 10001) writes the output folder.
chown 10001:10001 "$work/out"
list="$(run --network host -v "$work/sim:/sim:ro" "$image" -c /sim/config.yaml --list-only)"
grep -q 'ci-01' <<<"$list" || { echo "$list"; fail "--list-only does not show ci-01"; }
run --network host -v "$work/sim:/sim:ro" -v "$work/out:/out" "$image" -c /sim/config.yaml --quiet \
  || fail "the migration run"
qcow2="$work/out/ci-01/ci-01-os.qcow2"
[[ -f $qcow2 ]] || { find "$work/out"; fail "no $qcow2"; }
qemu-img check "$qcow2" >/dev/null || fail "qemu-img check $qcow2"
virtual="$(qemu-img info --output=json "$qcow2" | python3 -c 'import json, sys; print(json.load(sys.stdin)["virtual-size"])')"
[[ $virtual == $((1024 * 1024 * 1024)) ]] || fail "virtual size $virtual"
[[ -f $work/out/ci-01/ci-01.xml && -f $work/out/ci-01/report.json ]] || { find "$work/out"; fail "no domain XML or report"; }
say "a VM migrated by the image, its qcow2 checked by the host's qemu-img"

# libguestfs in the image, as the fix-ups use it: guestfish boots its appliance (supermin
# from the image's own kernel and packages, qemu under TCG: no /dev/kvm in the container) and
# sees the migrated disk.
devices="$(run -e LIBGUESTFS_BACKEND_SETTINGS=force_tcg -v "$work/out:/out:ro" --entrypoint guestfish \
  "$image" --ro -a /out/ci-01/ci-01-os.qcow2 run : list-devices 2>"$work/guestfish.log")" || {
  tail -n 20 "$work/guestfish.log"
  fail "guestfish in the image"
}
[[ $devices == /dev/sda ]] || fail "guestfish lists '$devices'"
say "libguestfs in the image boots its appliance and sees the migrated disk"
podman rm -f "$sim" >/dev/null
say "done"
