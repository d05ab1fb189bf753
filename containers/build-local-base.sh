#!/usr/bin/env bash
# containers/build-local-base.sh — a local stand-in for the NGC PyTorch base image, for tests on machines
# that cannot pull nvcr.io (no registry reachable; Debian bookworm, root, no systemd).
#
#   containers/build-local-base.sh [podman|docker]     prints the image name on stdout when it is ready
#
# What it makes (~6 GB, like NGC: python3 + pip + the CUDA build of torch and torchvision):
#   1. debootstrap --variant=minbase --include=python3,python3-pip bookworm   (cached in $CTR_WORKDIR)
#   2. `<runtime> import` of that rootfs                                       -> localhost/cifar-hpc-test-debian:bookworm
#   3. `pip install torch torchvision` from PyPI in a container, then commit   -> $CIFAR_HPC_BASE_IMAGE
# Each step is skipped when its result exists, so a second call returns at once. It installs what it
# needs with apt first (podman/buildah/runc, or docker.io + a hand-started dockerd), with the settings of
# shared/recipes/containers-recipe.sh that work here (runc, cgroupfs, reduced ulimits).
#
# Knobs: CIFAR_HPC_BASE_IMAGE (default localhost/cifar-hpc-test-base:torch2.14.1),
#        CIFAR_HPC_BASE_TORCH (pip requirements, default "torch==2.14.1 torchvision==0.29.1"),
#        CTR_WORKDIR (default /var/tmp/cifar-hpc-ctr), PIP_CERT (CA bundle for PyPI behind a TLS proxy;
#        default: the host's /etc/ssl/certs/ca-certificates.crt, mounted read-only into the build).
# Timings on the 2-core test VM: apt ~25 s, debootstrap ~75 s, import ~7 s, pip ~120 s, commit ~60-180 s
# (the whole real test: 6 min 28 s from no images, 36 s with the base cached).
set -euo pipefail

RT=${1:-podman}
IMAGE=${CIFAR_HPC_BASE_IMAGE:-localhost/cifar-hpc-test-base:torch2.14.1}
TORCH=${CIFAR_HPC_BASE_TORCH:-torch==2.14.1 torchvision==0.29.1}
W=${CTR_WORKDIR:-/var/tmp/cifar-hpc-ctr}
DEBIAN_IMAGE=localhost/cifar-hpc-test-debian:bookworm
ROOTFS=$W/debroot-pip
CA=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}

log() { printf '[build-local-base %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

case "$RT" in podman|docker) ;; *) echo "usage: $0 [podman|docker]" >&2; exit 2 ;; esac

apt_install() {
  log "apt-get install $*"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

install_tools() {
  local want=(debootstrap)
  if [ "$RT" = podman ]; then
    command -v podman >/dev/null || want+=(podman buildah runc uidmap fuse-overlayfs slirp4netns catatonit)
  else
    command -v dockerd >/dev/null || want+=(docker.io runc)
  fi
  command -v debootstrap >/dev/null && want=("${want[@]:1}")
  [ "${#want[@]}" -eq 0 ] || apt_install "${want[@]}"
  if [ "$RT" = podman ] && [ ! -e /etc/containers/containers.conf ]; then
    mkdir -p /etc/containers
    cat > /etc/containers/containers.conf <<'CONF'
# written by cifar-hpc containers/build-local-base.sh (settings from shared/recipes/containers-recipe.sh)
[containers]
# root here lacks CAP_SYS_RESOURCE: podman's default rlimits (nofile 1048576) fail with "setrlimit ... not permitted"
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[engine]
# crun 1.8 fails on a hybrid cgroup v1+v2 host ("cgroups in hybrid mode not supported")
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
  fi
  if [ "$RT" = docker ]; then
    export DOCKER_HOST=unix:///var/run/docker.sock
    if ! docker info >/dev/null 2>&1; then
      log "starting dockerd"
      setsid -f dockerd --host "$DOCKER_HOST" --pidfile /run/dockerd-test.pid >/var/log/dockerd-test.log 2>&1 </dev/null
      for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
      docker info >/dev/null 2>&1 || { log "dockerd did not come up; see /var/log/dockerd-test.log"; exit 1; }
    fi
  fi
}

have_image() { "$RT" image inspect "$1" >/dev/null 2>&1; }

main() {
  mkdir -p "$W"
  install_tools
  # one build at a time (parallel test sessions): the others wait, then find the image
  exec 9>"$W/build-local-base.$RT.lock"
  flock -w 1800 9 || { log "another build holds $W/build-local-base.$RT.lock"; exit 1; }
  if have_image "$IMAGE"; then echo "$IMAGE"; return; fi
  local t0=$SECONDS
  if ! have_image "$DEBIAN_IMAGE"; then
    if [ ! -x "$ROOTFS/usr/bin/pip3" ]; then
      log "debootstrap bookworm (python3, pip) into $ROOTFS"
      rm -rf "$ROOTFS"
      debootstrap --variant=minbase --include=python3,python3-pip bookworm "$ROOTFS" http://deb.debian.org/debian \
        >"$W/debootstrap.log" 2>&1 || { tail -20 "$W/debootstrap.log" >&2; exit 1; }
    fi
    log "importing $DEBIAN_IMAGE"
    tar -C "$ROOTFS" -c . | "$RT" import --change 'CMD ["/usr/bin/python3"]' - "$DEBIAN_IMAGE" >/dev/null
  fi
  # The CA bundle goes in as a mount and a pip option, NOT `-e PIP_CERT=...`: commit would bake the
  # container's environment into the image (and the empty mount point file stays behind: harmless).
  local name=cifar-hpc-base-build-$$ mounts=() cert=()
  [ -r "$CA" ] && { mounts=(-v "$CA:/run/host-ca.crt:ro"); cert=(--cert /run/host-ca.crt); }
  log "pip install $TORCH (a ~6 GB layer; PyPI through host networking)"
  "$RT" rm -f "$name" >/dev/null 2>&1 || true
  # word splitting of $TORCH is wanted: it is a list of requirements
  # shellcheck disable=SC2086
  if ! "$RT" run --name "$name" --network host "${mounts[@]}" "$DEBIAN_IMAGE" \
      python3 -m pip install --no-cache-dir --break-system-packages --root-user-action=ignore --progress-bar off "${cert[@]}" $TORCH \
      >"$W/base-pip.log" 2>&1; then
    tail -20 "$W/base-pip.log" >&2; "$RT" rm -f "$name" >/dev/null 2>&1 || true; exit 1
  fi
  log "committing $IMAGE"
  "$RT" commit --change 'CMD ["/usr/bin/python3"]' "$name" "$IMAGE" >/dev/null
  "$RT" rm -f "$name" >/dev/null
  "$RT" run --rm --network host "$IMAGE" python3 -c 'import torch, torchvision; print("base ok: torch", torch.__version__, "torchvision", torchvision.__version__)' >&2
  log "built $IMAGE in $((SECONDS - t0)) s"
  echo "$IMAGE"
}

main
