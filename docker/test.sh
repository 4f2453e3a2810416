#!/usr/bin/env bash
# make docker-test: build the Dockerfile with podman on a local Debian base, and again on a base that
# already has a user of UID 1000 (as the default Ubuntu 24.04 CUDA base does); run the named smoke run
# in the container, with a copy of the repository mounted from the host as another user would; then
# check that the outputs came out on the host, owned by that user.
#
# Needs root (or podman, runc and debootstrap installed and a working podman). Installs what is
# missing with apt, and builds the base image once (localhost/debian-base:bookworm).
# Environment: DOCKER_TEST_UID / DOCKER_TEST_GID (default: 1500 when run as root, else yours),
# DOCKER_TEST_IMAGE (default dtrepro:test).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
IMAGE=${DOCKER_TEST_IMAGE:-dtrepro:test}
BASE=localhost/debian-base:bookworm
export CONTAINERS_CONF=$ROOT/docker/containers.conf

step() { printf '\n== docker-test: %s\n' "$*"; }
fail() { printf 'docker-test: FAILED: %s\n' "$*" >&2; exit 1; }

missing=()
for tool in podman runc debootstrap; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if ((${#missing[@]})); then
  [ "$(id -u)" = 0 ] || fail "${missing[*]} not installed; install them (apt-get install podman runc debootstrap) or run as root"
  step "installing ${missing[*]}"
  apt-get update -qq && apt-get install -y -qq podman runc debootstrap >/dev/null
fi

if ! podman image exists "$BASE"; then
  step "making the base image $BASE with debootstrap"
  rootfs=$(mktemp -d)
  debootstrap --variant=minbase bookworm "$rootfs" >/dev/null
  tar -C "$rootfs" -c . | podman import - "$BASE" >/dev/null
  rm -rf "$rootfs"
fi

# pip's local wheels and CA bundle of this machine, if it has them, mounted for the build only
pip_setting() {  # the value of a pip setting (e.g. cert), from the environment or pip's config files
  python3 -m pip config list 2>/dev/null | sed -n "s/^[^ ]*\.$1='\(.*\)'$/\1/p" | head -n 1
}
build_args=()
links=${PIP_FIND_LINKS:-$(pip_setting find-links)}
if [ -n "$links" ] && [ -d "$links" ]; then
  build_args+=(--build-arg "PIP_FIND_LINKS=$links" -v "$links:$links:ro")
fi
cert=${PIP_CERT:-$(pip_setting cert)}
[ -n "$cert" ] || cert=/etc/ssl/certs/ca-certificates.crt
if [ -f "$cert" ]; then
  build_args+=(--build-arg PIP_CERT=/run/host-ca.crt -v "$cert:/run/host-ca.crt:ro")
fi

step "building $IMAGE on $BASE"
podman build --network host --build-arg "BASE_IMAGE=$BASE" "${build_args[@]}" -t "$IMAGE" .

# The default base (nvidia/cuda:*-ubuntu24.04) has user `ubuntu` with UID 1000; the Dockerfile must build on it too.
BASE_UID1000=localhost/debian-base-uid1000:bookworm
step "building on $BASE_UID1000, a base with a UID-1000 user"
base_file=$(mktemp)
printf 'FROM %s\nRUN useradd --uid 1000 --user-group --create-home ubuntu\n' "$BASE" >"$base_file"
podman build --network host -t "$BASE_UID1000" -f "$base_file" "$(mktemp -d)"
rm -f "$base_file"
podman build --network host --build-arg "BASE_IMAGE=$BASE_UID1000" "${build_args[@]}" -t "$IMAGE-uid1000" .
podman run --rm "$IMAGE-uid1000" sh -c 'test "$(id -u)" = 1000 && getent passwd 1000 | grep -q ^ubuntu:' \
  || fail "the image built on $BASE_UID1000 does not run as the base's own UID-1000 user"

if [ "$(id -u)" = 0 ]; then uid=${DOCKER_TEST_UID:-1500} gid=${DOCKER_TEST_GID:-1500}; else uid=$(id -u) gid=$(id -g); fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
step "copying the repository to $work/repo, owned by $uid:$gid"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
  [ -f "$f" ] && install -D -m "$(stat -c %a "$f")" "$f" "$work/repo/$f"
done
git -C "$work/repo" init -q -b main
git -C "$work/repo" add -A
git -C "$work/repo" -c user.name=docker-test -c user.email=docker-test@localhost commit -q -m copy
[ "$(id -u)" = 0 ] && chown -R "$uid:$gid" "$work/repo"

step "the named smoke run (dvc exp run) in the container as $uid:$gid"
podman run --rm --network none --user "$uid:$gid" -v "$work/repo:/workspace" "$IMAGE" \
  dtrepro run smoke
podman run --rm --user "$uid:$gid" -v "$work/repo:/workspace" "$IMAGE" dvc status \
  | grep -q "Data and pipelines are up to date" || fail "dvc status in the container is not up to date after the run"

step "checking the outputs on the host"
d=collected-hopper-medium  # the smoke run's dataset
for f in reports/source/$d.json reports/repair/$d.json reports/train/$d/k5-seed0.json reports/eval/$d/k5-seed0.json \
         reports/eval/$d/k1-seed1.json results/ablations.json results/ablations.md results/plots/$d/return_conditioning.png \
         results/suite.md models/$d/k5-seed0/last.pt dvc.lock; do
  [ -s "$work/repo/$f" ] || fail "$f was not written"
  owner=$(stat -c %u:%g "$work/repo/$f")
  [ "$owner" = "$uid:$gid" ] || fail "$f is owned by $owner, not by the calling user $uid:$gid"
done
podman run --rm -v "$work/repo:/workspace" "$IMAGE" git status --short >/dev/null \
  || fail "git in the image (as its own user) refuses a repository owned by $uid:$gid: safe.directory"
python3 -c "import json,sys; m=json.load(open(sys.argv[1])); assert m['$d.k5.last.target_3600.episodes'] > 0" \
  "$work/repo/results/ablations.json" || fail "results/ablations.json lacks the headline evaluation"
printf '\ndocker-test: OK: %s built on %s and on %s; the named smoke run ran in it; outputs on the host owned by %s\n' \
  "$IMAGE" "$BASE" "$BASE_UID1000" "$uid:$gid"
