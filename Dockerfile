# hyper2kvm in a container: the binary, and libguestfs with what the guest fix-ups use (qemu,
# a kernel for the appliance, ntfs-3g, hivex, rhsrvany). Nothing is fetched at run time:
# virtio-win for Windows guests is mounted and named in the config (guest.windows.virtio_win).
#
#   docker build -t hyper2kvm .                (or: podman build -t hyper2kvm .)
#   docker run --rm -v "$PWD:/work" hyper2kvm -c /work/config.yaml --list-only
#
# Kubernetes and Slurm: deploy/ and docs/fleet-clusters.md.
#
# With a release binary built already (`cargo build --release --locked -p hyper2kvm-cli`), no
# Rust image is needed: put the binary alone in a folder and make that the build context,
#   podman build --build-arg BINARY_FROM=prebuilt -f Dockerfile -t hyper2kvm DIR
# (CI does so, .ci/container.sh; the repository's .dockerignore keeps target/ out of the
# default context).

# The stage the binary comes from: `build` (from source) or `prebuilt` (the context's file).
ARG BINARY_FROM=build

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p hyper2kvm-cli

FROM scratch AS prebuilt
COPY hyper2kvm /src/target/release/hyper2kvm

# `:-build` repeats the default for podman 4.3 (buildah 1.28), whose stage analysis ignores an
# ARG's default here and would otherwise skip the build stage.
FROM ${BINARY_FROM:-build} AS binary

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
COPY --from=binary /src/target/release/hyper2kvm /usr/local/bin/hyper2kvm
# libguestfs runs its appliance with qemu directly (no libvirtd in a container), and uses KVM
# only where a probe boot shows it works (docs/guest.md).
ENV LIBGUESTFS_BACKEND=direct
USER 10001
WORKDIR /work
ENTRYPOINT ["/usr/local/bin/hyper2kvm"]
CMD ["--help"]
