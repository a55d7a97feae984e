#!/usr/bin/env bash
# Makes the Debian base images that the Dockerfile's FROM lines name, for a machine
# that cannot reach Docker Hub: debootstrap (minbase, like Debian's official images)
# from the Debian mirror apt already uses, then `podman import`.
#
#   tools/container-base.sh            # as root; skips the images that exist already
#   tools/container-base.sh --force    # makes them again
#
# Tags (what `FROM debian:bookworm` / `FROM debian:bookworm-slim` resolve to):
#   docker.io/library/debian:bookworm        minbase bookworm
#   docker.io/library/debian:bookworm-slim   the same, without docs, man pages and
#                                            locales (dpkg path-excludes, as Debian's
#                                            -slim images do)
# Needs: podman, debootstrap (tools/debian-packages.txt). Takes about 40 s.
set -euo pipefail
SUITE=bookworm
FULL=docker.io/library/debian:$SUITE
SLIM=docker.io/library/debian:$SUITE-slim
force=0
[ "${1:-}" = "--force" ] && force=1

say() { echo "container-base: $*"; }

if [ "$force" -eq 0 ] && podman image exists "$FULL" && podman image exists "$SLIM"; then
  say "$FULL and $SLIM exist already (--force makes them again)"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  say "debootstrap needs root: run sudo $0" >&2
  exit 1
fi
for cmd in podman debootstrap; do
  command -v "$cmd" > /dev/null || { say "$cmd is missing (tools/deps.sh installs it)" >&2; exit 1; }
done

# The mirror (and the security mirror) of apt's own configuration: one-line
# sources.list entries and deb822 .sources files alike.
mirror_for() { # suite -> the first URI that serves it
  local want=$1 f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] || continue
    awk -v s="$want" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                                    if ($(i + 1) == s) { print $i; exit } }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    # deb822 stanzas, separated by blank lines; comments ignored
    awk -v s="$want" 'BEGIN { RS = ""; FS = "\n" }
      { types = ""; uris = ""; suites = ""
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^#/) continue
          if ($i ~ /^Types:/)  types = $i
          if ($i ~ /^URIs:/)   uris = $i
          if ($i ~ /^Suites:/) suites = $i }
        if (types !~ /[ \t]deb([ \t]|$)/) next
        sub(/^Suites:[ \t]*/, "", suites); sub(/^URIs:[ \t]*/, "", uris)
        n = split(suites, ss, /[ \t]+/)
        for (j = 1; j <= n; j++) if (ss[j] == s) { split(uris, us, /[ \t]+/); print us[1]; exit } }' "$f"
  done
}
mirror=$(mirror_for "$SUITE" | head -1)
security=$(mirror_for "$SUITE-security" | head -1)
mirror=${mirror:-http://deb.debian.org/debian}
security=${security:-http://deb.debian.org/debian-security}
say "mirror $mirror (security: $security)"

work=$(mktemp -d /var/tmp/resnetd-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
t0=$(date +%s)
say "debootstrap --variant=minbase $SUITE (log: $work/debootstrap.log) ..."
if ! debootstrap --variant=minbase "$SUITE" "$root" "$mirror" > "$work/debootstrap.log" 2>&1; then
  tail -n 20 "$work/debootstrap.log" >&2
  say "debootstrap failed" >&2
  exit 1
fi
say "debootstrap done in $(( $(date +%s) - t0 )) s"

# What Debian's official images carry: deb822 sources with updates and security,
# apt that keeps no .deb files and fetches no translations, no package lists.
rm -f "$root/etc/apt/sources.list"
cat > "$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
cat > "$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
echo 'Acquire::Languages "none";' > "$root/etc/apt/apt.conf.d/docker-no-languages"
echo 'force-unsafe-io' > "$root/etc/dpkg/dpkg.cfg.d/docker-apt-speedup"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
       "$root"/var/log/*.log "$root"/var/log/apt/* "$root"/tmp/* "$root"/var/tmp/*
: > "$root/etc/hostname"
: > "$root/etc/resolv.conf"

import() { # tag
  say "importing $1 ..."
  tar -C "$root" --numeric-owner --xattrs -c \
      --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' --exclude='./run/*' . |
    podman import --quiet \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["bash"]' \
      --message "debootstrap --variant=minbase $SUITE $mirror (tools/container-base.sh)" \
      - "$1" > /dev/null
  say "$1: $(podman image inspect --format '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1 / 1e6}')"
}

import "$FULL"

# -slim: the path-excludes of Debian's slim images, then the files they exclude
cat > "$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
# as Debian's -slim images: no documentation, man pages or translations
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$root"/usr/share/man/* "$root"/usr/share/groff/* "$root"/usr/share/info/* \
       "$root"/usr/share/lintian/* "$root"/usr/share/linda/*
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
import "$SLIM"
say "done in $(( $(date +%s) - t0 )) s"
