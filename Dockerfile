# hyper2kvm in a container: the binary, and libguestfs with what the guest fix-ups use (qemu,
# a kernel for the appliance, ntfs-3g, hivex, rhsrvany). Nothing is fetched at run time:
# virtio-win for Windows guests is mounted and named in the config (guest.windows.virtio_win).
#
#   docker build -t hyper2kvm .                (or: podman build -t hyper2kvm .)
#   docker run --rm -v "$PWD:/work" hyper2kvm -c /work/config.yaml --list-only
#
# Kubernetes and Slurm: deploy/ and docs/fleet-clusters.md.

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p hyper2kvm-cli

FROM debian:bookworm-slim
# rhsrvany (Windows first-boot service wrapper) is only in bookworm-backports: its source is
# the base image's own Debian archive with the suite changed, so no archive host is named here.
RUN set -eu; \
    awk 'BEGIN { RS = ""; ORS = "\n\n" } NR == 1 { sub(/Suites:[^\n]*/, "Suites: bookworm-backports"); print }' \
        /etc/apt/sources.list.d/debian.sources >/etc/apt/sources.list.d/backports.sources; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates qemu-utils qemu-system-x86 libguestfs-tools linux-image-amd64 \
        ntfs-3g libhivex-bin libwin-hivex-perl; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        -t bookworm-backports rhsrvany; \
    rm -rf /var/lib/apt/lists/*; \
    useradd --uid 10001 --create-home --home-dir /home/hyper2kvm hyper2kvm
COPY --from=build /src/target/release/hyper2kvm /usr/local/bin/hyper2kvm
# libguestfs runs its appliance with qemu directly (no libvirtd in a container), and uses KVM
# only where a probe boot shows it works (docs/guest.md).
ENV LIBGUESTFS_BACKEND=direct
USER 10001
WORKDIR /work
ENTRYPOINT ["/usr/local/bin/hyper2kvm"]
CMD ["--help"]
