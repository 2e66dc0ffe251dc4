#!/usr/bin/env bash
# Builds the svcnet container image without a Docker daemon: static `agentctl` (the entrypoint,
# `agentctl run`) and `svcnet-dns` (the Corefile-driven DNS server) in a minimal image (no shell,
# no package manager), written as an OCI image layout with umoci and packed into an OCI
# archive that `ctr images import`, `podman load` and `skopeo copy oci-archive:...` accept.
#
# The IPVS proxy applies its iptables rules and ipsets with `iptables-{legacy,nft}-restore` and
# `ipset restore`, as kube-proxy does, so the image also carries those tools from the build host's
# Debian packages (iptables, ipset) with exactly the shared libraries and xtables extensions they
# load (their versions are recorded in the label svcnet.netfilter-tools). `--no-netfilter-tools`
# leaves them out: such an image can run DNS only (`agentctl run --no-proxy`).
#
# Reproducible: every timestamp comes from SOURCE_DATE_EPOCH (default: the last commit's time), files
# are owned by 0:0 with fixed modes, umoci writes tar entries in lexical order, and the archive is
# written by GNU tar with sorted names and no atime/ctime. The same binary and the same options give
# the same image digest, printed on the last line of standard output.
#
# Usage: deploy/image/build-image.sh [options]
#   --binary PATH       put this agentctl binary in the image instead of building one
#                       (CI uses the debug build; a release image should let the script build)
#   --dns-binary PATH   likewise for svcnet-dns (required with --binary)
#   --target TRIPLE     build for this target: x86_64-unknown-linux-musl (default when installed,
#                       needs musl-gcc from Debian's musl-tools for ring's C code) or
#                       x86_64-unknown-linux-gnu (linked statically with +crt-static)
#   --out DIR           output directory (default: target/image); it receives `oci/` (the layout)
#                       and the archive
#   --name NAME         image name for the archive annotations (default: svcnet/agentctl)
#   --tag TAG           image tag (default: the workspace version from Cargo.toml)
#   --no-archive        stop at the OCI layout
#   --no-netfilter-tools  leave out iptables/ipset (a DNS-only image)
#   --no-strip          keep the binary's debug information (stripped by default with
#                       `strip --strip-debug`, which keeps the symbols panics print)
#   --allow-dynamic     accept a dynamically linked --binary (CI's debug build); the image then
#                       only serves to check the layout, it cannot run on a node
#
# Tools: umoci, GNU tar, jq, sha256sum, file, strip (binutils); skopeo (optional) checks the
# archive it wrote.
set -euo pipefail

die() { echo "build-image: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is required ($2)"; }

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
binary=""
dns_binary=""
target=""
out="$repo_root/target/image"
name="svcnet/agentctl"
tag=""
archive=1
allow_dynamic=0
strip_debug=1
netfilter_tools=1

while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary=${2:?--binary needs a path}; shift 2 ;;
        --dns-binary) dns_binary=${2:?--dns-binary needs a path}; shift 2 ;;
        --target) target=${2:?--target needs a triple}; shift 2 ;;
        --out) out=${2:?--out needs a directory}; shift 2 ;;
        --name) name=${2:?--name needs a value}; shift 2 ;;
        --tag) tag=${2:?--tag needs a value}; shift 2 ;;
        --no-archive) archive=0; shift ;;
        --no-strip) strip_debug=0; shift ;;
        --no-netfilter-tools) netfilter_tools=0; shift ;;
        --allow-dynamic) allow_dynamic=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

need umoci "Debian package umoci"
need jq "Debian package jq"
need tar "GNU tar"
need file "Debian package file"
need sha256sum "coreutils"

if [ -z "$tag" ]; then
    tag=$(awk '/^\[workspace.package\]/{p=1; next} /^\[/{p=0} p && $1=="version" {gsub(/"/,"",$3); print $3; exit}' \
        "$repo_root/Cargo.toml")
    [ -n "$tag" ] || die "cannot read the workspace version from Cargo.toml; pass --tag"
fi
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git -C "$repo_root" log -1 --format=%ct 2>/dev/null || echo 0)
fi
export SOURCE_DATE_EPOCH
created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
revision=$(git -C "$repo_root" rev-parse HEAD 2>/dev/null || echo unknown)

# --- 1. the static binaries -------------------------------------------------------------------
if [ -n "$binary" ] && [ -z "$dns_binary" ]; then
    die "--binary needs --dns-binary too"
fi
if [ -z "$binary" ]; then
    need cargo "a Rust toolchain"
    if [ -z "$target" ]; then
        if rustc --print target-libdir --target x86_64-unknown-linux-musl 2>/dev/null | xargs test -d \
            && command -v musl-gcc >/dev/null; then
            target=x86_64-unknown-linux-musl
        else
            echo "build-image: musl target or musl-gcc missing; linking glibc statically instead" >&2
            target=x86_64-unknown-linux-gnu
        fi
    fi
    # Paths of this checkout and of the cargo registry would end up in panic messages: map them to
    # fixed names so that the binary does not depend on where it was built.
    export RUSTFLAGS="${RUSTFLAGS:-} --remap-path-prefix=$repo_root=/svcnet --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo"
    case "$target" in
        *-linux-musl)
            # ring compiles C; cc-rs looks for x86_64-linux-musl-gcc, Debian ships musl-gcc.
            export CC_x86_64_unknown_linux_musl=${CC_x86_64_unknown_linux_musl:-musl-gcc}
            (cd "$repo_root" && cargo build --locked --release --target "$target" \
                -p agentctl --bin agentctl -p svcnet-dns --bin svcnet-dns) >&2
            ;;
        *-linux-gnu)
            # glibc linked statically: svcnet makes no NSS lookups (the API server address comes
            # from KUBERNETES_SERVICE_HOST, DNS upstreams from resolv.conf), so the NSS modules a
            # static glibc would dlopen are never needed. A kubeconfig naming its server by host
            # name would need them: use musl for that.
            (cd "$repo_root" && RUSTFLAGS="$RUSTFLAGS -C target-feature=+crt-static" \
                cargo build --locked --release --target "$target" \
                -p agentctl --bin agentctl -p svcnet-dns --bin svcnet-dns) >&2
            ;;
        *) die "unsupported --target $target" ;;
    esac
    binary="${CARGO_TARGET_DIR:-$repo_root/target}/$target/release/agentctl"
    dns_binary="${CARGO_TARGET_DIR:-$repo_root/target}/$target/release/svcnet-dns"
fi
for b in "$binary" "$dns_binary"; do
    [ -f "$b" ] || die "binary $b does not exist"
    kind=$(file -b "$b")
    case "$kind" in
        *"statically linked"*|*"static-pie linked"*) ;;
        *)
            if [ "$allow_dynamic" = 1 ]; then
                echo "build-image: warning: $b is dynamically linked (accepted with --allow-dynamic)" >&2
            else
                die "$b is not statically linked ($kind); a FROM-scratch image needs a static binary"
            fi
            ;;
    esac
done

# --- 2. the OCI layout ------------------------------------------------------------------------
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/svcnet-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
layout="$out/oci"
rm -rf "$layout"

rootless=()
[ "$(id -u)" = 0 ] || rootless=(--rootless)

umoci init --layout "$layout"
umoci new --image "$layout:$tag"
umoci unpack "${rootless[@]}" --image "$layout:$tag" "$work/bundle"
rootfs="$work/bundle/rootfs"
[ "$strip_debug" = 0 ] || need strip "Debian package binutils, or pass --no-strip"
for pair in "agentctl:$binary" "svcnet-dns:$dns_binary"; do
    name_in_image=${pair%%:*} source=${pair#*:}
    if [ "$strip_debug" = 1 ]; then
        strip --strip-debug -o "$rootfs/$name_in_image" "$source"
        chmod 0755 "$rootfs/$name_in_image"
    else
        install -m 0755 "$source" "$rootfs/$name_in_image"
    fi
done
install -d -m 0755 "$rootfs/etc" "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"
printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group"
tools_label="none"
if [ "$netfilter_tools" = 1 ]; then
    need ldd "libc-bin"
    need dpkg-query "dpkg"
    libdir=/usr/lib/x86_64-linux-gnu
    for tool in /usr/sbin/xtables-legacy-multi /usr/sbin/xtables-nft-multi /usr/sbin/ipset; do
        [ -x "$tool" ] || die "$tool is missing: install Debian's iptables and ipset, or pass --no-netfilter-tools"
    done
    install -d -m 0755 "$rootfs/usr/sbin" "$rootfs/usr/lib/x86_64-linux-gnu/xtables" "$rootfs/lib64"
    install -m 0755 /usr/sbin/xtables-legacy-multi /usr/sbin/xtables-nft-multi /usr/sbin/ipset "$rootfs/usr/sbin/"
    # The names the proxy runs: {iptables,ip6tables}-{legacy,nft}[-save|-restore].
    for family in iptables ip6tables; do
        for variant in legacy nft; do
            for suffix in "" -save -restore; do
                ln -s "xtables-$variant-multi" "$rootfs/usr/sbin/$family-$variant$suffix"
            done
        done
    done
    # Extensions are dlopen()ed from the directory compiled into libxtables.
    install -m 0644 "$libdir"/xtables/*.so "$rootfs/usr/lib/x86_64-linux-gnu/xtables/"
    # Every shared library those programs and extensions load, under its soname, and the loader.
    elves=(/usr/sbin/xtables-legacy-multi /usr/sbin/xtables-nft-multi /usr/sbin/ipset "$libdir"/xtables/*.so)
    ldd "${elves[@]}" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | sort -u |
        while read -r soname path; do
            install -m 0644 "$(readlink -f "$path")" "$rootfs/usr/lib/x86_64-linux-gnu/$soname"
        done
    install -m 0755 "$(readlink -f /lib64/ld-linux-x86-64.so.2)" "$rootfs/lib64/ld-linux-x86-64.so.2"
    # Protocol names for `-p tcp` and friends.
    [ -f /etc/protocols ] && install -m 0644 /etc/protocols "$rootfs/etc/protocols"
    tools_label=$(dpkg-query -W -f '${Package}=${Version} ' iptables ipset libc6 | sed 's/ $//')
fi
[ "$(id -u)" = 0 ] && chown -R -h 0:0 "$rootfs"
find "$rootfs" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
# `umoci insert` of a directory writes a truncated layer with umoci 0.4.7; unpack + repack does not.
umoci repack "${rootless[@]}" --image "$layout:$tag" --history.created "$created" \
    --history.created_by "deploy/image/build-image.sh: agentctl" "$work/bundle"
umoci config --image "$layout:$tag" --created "$created" --history.created "$created" \
    --history.created_by "deploy/image/build-image.sh: config" \
    --architecture amd64 --os linux \
    --config.entrypoint /agentctl --config.cmd run \
    --config.workingdir / \
    --config.env PATH=/usr/sbin:/ \
    --config.label "org.opencontainers.image.title=svcnet" \
    --config.label "org.opencontainers.image.description=svcnet node agent: IPVS service proxy and cluster DNS" \
    --config.label "org.opencontainers.image.version=$tag" \
    --config.label "org.opencontainers.image.revision=$revision" \
    --config.label "org.opencontainers.image.licenses=Apache-2.0" \
    --config.label "svcnet.netfilter-tools=$tools_label"
umoci gc --layout "$layout"

# Name the image the way BuildKit's OCI exporter does, so `ctr images import` and `podman load`
# give it a name: the full reference for containerd, the tag for the OCI annotation.
ref="docker.io/$name:$tag"
jq -c --arg ref "$ref" --arg tag "$tag" \
    '.manifests |= map(.annotations = {"io.containerd.image.name": $ref, "org.opencontainers.image.ref.name": $tag})' \
    "$layout/index.json" >"$work/index.json"
cat "$work/index.json" >"$layout/index.json"
digest=$(jq -r '.manifests[0].digest' "$layout/index.json")

# --- 3. the OCI archive -----------------------------------------------------------------------
if [ "$archive" = 1 ]; then
    archive_file="$out/svcnet-$tag.oci.tar"
    find "$layout" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
        --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
        -C "$layout" -cf "$archive_file" oci-layout index.json blobs
    if command -v skopeo >/dev/null 2>&1; then
        got=$(skopeo inspect --raw "oci-archive:$archive_file" | sha256sum | cut -d' ' -f1)
        [ "sha256:$got" = "$digest" ] || die "skopeo reads manifest sha256:$got from the archive, expected $digest"
    fi
    echo "build-image: archive $archive_file ($(du -h "$archive_file" | cut -f1)); load it with" >&2
    echo "  ctr -n k8s.io images import $archive_file" >&2
    echo "  skopeo copy oci-archive:$archive_file docker://REGISTRY/$name:$tag" >&2
fi
echo "build-image: layout $layout, image $ref" >&2
echo "$digest"
