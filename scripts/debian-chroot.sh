# shellcheck shell=bash
# Sourced (not run) by scripts/build-deb and scripts/lintian-deb: their cached
# debootstrap chroots, made one way in one place.
#
#   debian_chroot NAME RELEASE INCLUDE    -> sets $chroot to $cache/NAME
#
# $cache is $APPLIANCE_BUILD_CACHE (default /var/cache/jupyterhub-appliance-build),
# the archive $APPLIANCE_DEBIAN_MIRROR (default deb.debian.org). The chroot is a
# minbase debootstrap of RELEASE plus INCLUDE (comma-separated packages), made in
# NAME.tmp and renamed when complete, with a marker recording what it was made
# with: a changed release, package list or mirror makes a new one.
#
# It is a function, not a script, because the caller must go on holding the lock
# (fd 9 on $cache/NAME.lock, taken here) while it uses the chroot: otherwise another
# run could replace it underneath. Users of one NAME thus wait for each other;
# different NAMEs run side by side. Messages carry the calling script's name.
# Needs root, debootstrap, flock; the caller checks those.

cache=${APPLIANCE_BUILD_CACHE:-/var/cache/jupyterhub-appliance-build}
mirror=${APPLIANCE_DEBIAN_MIRROR:-http://deb.debian.org/debian}

debian_chroot() {
  local name=$1 release=$2 include=$3 me=${0##*/} t0=$SECONDS
  local marker=.jupyterhub-appliance-build
  # This exact text is what build-deb's chroots were always marked with: keep it,
  # or every existing cache is bootstrapped again.
  local want_marker="release=$release
mirror=$mirror
include=$include
variant=minbase"
  chroot=$cache/$name
  mkdir -p "$cache"
  exec 9>"$cache/$name.lock"
  flock 9
  if [ -d "$chroot" ] && [ "$(cat "$chroot/$marker" 2>/dev/null)" != "$want_marker" ]; then
    echo "$me: the cached chroot $chroot was made with other settings (or is incomplete): making a new one" >&2
    rm -rf --one-file-system "$chroot"
  fi
  [ -d "$chroot" ] && return 0
  echo "$me: bootstrapping a Debian $release chroot in $chroot (once; a minute or more)" >&2
  rm -rf --one-file-system "$chroot.tmp"
  debootstrap --variant=minbase --include="$include" "$release" "$chroot.tmp" "$mirror" > "$cache/$name.debootstrap.log" 2>&1 \
    || { tail -n 20 "$cache/$name.debootstrap.log" >&2; echo "$me: debootstrap of $release failed (log: $cache/$name.debootstrap.log)" >&2; exit 1; }
  rm -f "$chroot.tmp/var/cache/apt/archives/"*.deb
  printf '%s\n' "$want_marker" > "$chroot.tmp/$marker"
  mv "$chroot.tmp" "$chroot"
  echo "$me: $name chroot ready in $((SECONDS - t0)) s" >&2
}
