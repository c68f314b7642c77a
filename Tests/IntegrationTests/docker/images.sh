#!/usr/bin/env bash
# Stand-in base images for the real-engine test. Nothing can be pulled here, so the images our Dockerfiles start
# FROM are made locally: a Debian 12 root file system from debootstrap (on the host side, where apt's mirror is
# reachable), holding every package a `RUN apt-get install` in our Dockerfiles asks for, since a build inside the
# engine's namespace reaches no mirror. The tarball is cached between runs on one machine, keyed by everything that
# goes into it, so only a cold run pays for debootstrap.
#
# Prints two paths: the Debian 12 tarball (the stand-in for ubuntu:24.04) and the Swift builder's (the stand-in for
# swift:6.3.1-noble): the same root file system plus the toolchain installed on this machine (without what a build
# never runs: lldb, sourcekit, docc, clangd, the embedded stdlib) and the local swift-argument-parser copy, which
# git inside the build reaches through an insteadOf for github.com, as git does on this machine.
set -euo pipefail

suite=bookworm
mirror="${PORTCULLIS_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
cache="${PORTCULLIS_IMAGE_CACHE:-/var/cache/portcullis-test-images}"

# What each Dockerfile installs, plus what the test's own client containers run (python3 for poplib).
runtime="libpcre2-8-0 libnftnl11 libmnl0 libsqlite3-0 libpq5 curl ca-certificates"
mail="dovecot-pop3d"
client="python3"
# The Swift builder: the dev packages deploy's Dockerfile installs, git for SwiftPM, and what the toolchain in
# /opt/swift links against or calls (ldd swift-frontend swift-build clang; clang links through gcc's crt files).
building="libpcre2-dev libnftnl-dev libmnl-dev libsqlite3-dev pkg-config libcurl4-openssl-dev libssl-dev libpq-dev git binutils gcc libc6-dev libgcc-12-dev
 libstdc++-12-dev libcurl4 libxml2 libncurses6 libicu72 libffi8 zlib1g libzstd1 tzdata"
# shellcheck disable=SC2086  # the lists are split into words on purpose
packages=$(echo $runtime $mail $client $building | tr ' ' '\n' | sort -u | paste -sd, -)

# The key: what goes into the root file system (bump `recipe` when the way it is made changes).
recipe=1
key=$(printf '%s\n%s\n%s\n%s\n' "$recipe" "$suite" "$mirror" "$packages" | sha256sum | cut -c1-16)
tarball="$cache/debian12-$key.tar"
swift=/opt/swift
parser=/opt/swift-packages/apple/swift-argument-parser.git
toolkey=$(printf '%s\n%s\n%s\n' "$key" "$("$swift/usr/bin/swift" --version 2>&1)" "$(git -C "$parser" rev-parse HEAD 2>/dev/null)" | sha256sum | cut -c1-16)
builder="$cache/swift-builder-$toolkey.tar"
if [ -s "$tarball" ] && [ -s "$builder" ]; then
  echo "$tarball"
  echo "$builder"
  exit 0
fi

mkdir -p "$cache"
work=$(mktemp -d "$cache/rootfs.XXXXXX")
trap 'rm -rf "$work"' EXIT
if [ -s "$tarball" ]; then
  mkdir "$work/root" && tar -C "$work/root" -xf "$tarball"
else
  echo "debootstrap $suite ($packages) into $work" >&2
  debootstrap --variant=minbase --include="$packages" "$suite" "$work/root" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -30 "$work/debootstrap.log" >&2; exit 1; }
  # apt's lists stay, so that `apt-get install` of a package the image holds answers "already the newest version"
  # in a build without a network. Nothing of the host's is copied in.
  rm -rf "$work/root/var/cache/apt/archives/"*.deb
  tar -C "$work/root" --numeric-owner -cf "$tarball.part" .
  mv "$tarball.part" "$tarball"
fi

mkdir -p "$work/root/etc"
printf '[url "/opt/swift-packages/"]\n\tinsteadOf = https://github.com/\n' > "$work/root/etc/gitconfig"
echo "swift builder: $tarball + $swift + $parser" >&2
tar --numeric-owner -cf "$builder.part" -C "$work/root" . -C / \
  --exclude='opt/swift/usr/bin/lldb*' --exclude=opt/swift/usr/bin/sourcekit-lsp --exclude=opt/swift/usr/bin/clangd \
  --exclude=opt/swift/usr/bin/docc --exclude=opt/swift/usr/bin/swift-format --exclude=opt/swift/usr/bin/repl_swift \
  --exclude='opt/swift/usr/lib/liblldb*' --exclude='opt/swift/usr/lib/libsourcekitd*' \
  --exclude=opt/swift/usr/lib/libSwiftSourceKitPlugin.so --exclude=opt/swift/usr/lib/swift/embedded \
  "${swift#/}" "${parser#/}"
mv "$builder.part" "$builder"
# Older tarballs (other package lists, another toolchain) are of no more use.
find "$cache" -maxdepth 1 \( -name 'debian12-*.tar' ! -name "$(basename "$tarball")" \
  -o -name 'swift-builder-*.tar' ! -name "$(basename "$builder")" \) -delete
echo "$tarball"
echo "$builder"
