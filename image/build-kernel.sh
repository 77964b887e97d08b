#!/usr/bin/env bash
# Build the appliance kernel from Debian's linux-source-6.1 and the fragment in
# kernel-config/appliance.config, cached by a hash of the inputs.
#
# usage: image/build-kernel.sh [--config-only] OUT_DIR
#
# Writes OUT_DIR/bzImage and OUT_DIR/kernel.config (the final .config). With
# --config-only, stops after the fragment check and writes only kernel.config
# (a few seconds; use it while editing the fragment).
#
# Cache: ${APPLIANCE_CACHE:-$HOME/.cache/appliance}/kernel/
#   <key>/         finished builds: bzImage, kernel.config, System.map;
#                  key = sha256(fragment, this script, linux-source-6.1 package version)
#   src/linux-source-6.1-<version>/  the extracted source tree, shared by all keys
#   obj/           the out-of-tree object dir, reused so that an edit of the fragment
#                  rebuilds incrementally; one build at a time (flock on .lock)
# Runs as root or not; installs nothing.
set -euo pipefail

readonly SRC_PACKAGE=linux-source-6.1
readonly SRC_TARBALL=/usr/src/linux-source-6.1.tar.xz
readonly APT_PACKAGES="linux-source-6.1 bc bison flex libelf-dev libssl-dev cpio xz-utils build-essential"

die() {
    printf 'build-kernel: error: %s\n' "$*" >&2
    exit 1
}

log() {
    printf 'build-kernel: %s\n' "$*" >&2
}

usage() {
    printf 'usage: %s [--config-only] OUT_DIR\n' "$0" >&2
    exit 2
}

config_only=false
if [[ $# -ge 1 && $1 == --config-only ]]; then
    config_only=true
    shift
fi
[[ $# -eq 1 ]] || usage
out_dir=$1

script=$(readlink -f "${BASH_SOURCE[0]}")
repo=$(dirname "$(dirname "$script")")
fragment=$repo/kernel-config/appliance.config
[[ -r $fragment ]] || die "kernel config fragment not found at $fragment"

# --- prerequisites -------------------------------------------------------------

missing_prereqs() {
    local missing=()
    [[ -r $SRC_TARBALL ]] || missing+=("$SRC_TARBALL")
    local tool
    for tool in make gcc ld bc bison flex cpio xz tar perl sha256sum flock dpkg-query; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    # objtool needs libelf headers; the kernel's cert tooling needs openssl headers.
    if command -v gcc >/dev/null 2>&1; then
        local header
        for header in gelf.h openssl/opensslv.h; do
            printf '#include <%s>\n' "$header" | gcc -E -x c - >/dev/null 2>&1 \
                || missing+=("<$header>")
        done
    fi
    if ((${#missing[@]})); then
        printf '%s ' "${missing[@]}"
    fi
}

missing=$(missing_prereqs)
if [[ -n $missing ]]; then
    die "missing build prerequisites: ${missing% }
install them with: apt-get install $APT_PACKAGES"
fi

src_version=$(dpkg-query -W -f='${Version}' "$SRC_PACKAGE" 2>/dev/null) \
    || die "package $SRC_PACKAGE is not installed; install with: apt-get install $APT_PACKAGES"
[[ -n $src_version ]] || die "package $SRC_PACKAGE has no version; reinstall it"

# --- cache lookup ----------------------------------------------------------------

key=$(
    {
        printf 'fragment %s\n' "$(sha256sum <"$fragment" | cut -d' ' -f1)"
        printf 'script %s\n' "$(sha256sum <"$script" | cut -d' ' -f1)"
        printf 'source %s %s\n' "$SRC_PACKAGE" "$src_version"
    } | sha256sum | cut -d' ' -f1
)

if [[ -z ${APPLIANCE_CACHE:-} && -z ${HOME:-} ]]; then
    die "neither APPLIANCE_CACHE nor HOME is set; set APPLIANCE_CACHE to a writable directory"
fi
cache=${APPLIANCE_CACHE:-$HOME/.cache/appliance}/kernel
entry=$cache/$key
mkdir -p "$cache" || die "cannot create cache directory $cache"

install_outputs() {
    # Copy the named files from $entry to OUT_DIR, each through a temp name and a rename.
    mkdir -p "$out_dir" || die "cannot create output directory $out_dir"
    local name
    for name in "$@"; do
        cp "$entry/$name" "$out_dir/.$name.tmp.$$"
        mv -f "$out_dir/.$name.tmp.$$" "$out_dir/$name"
    done
}

if ! $config_only && [[ -f $entry/bzImage ]]; then
    install_outputs bzImage kernel.config
    log "cached kernel $key ($(stat -c %s "$entry/bzImage") bytes) -> $out_dir"
    exit 0
fi

# One build at a time per cache: the source tree and object dir are shared.
exec 9>"$cache/.lock"
if ! flock -n 9; then
    log "waiting for another kernel build holding $cache/.lock"
    flock 9
fi
if ! $config_only && [[ -f $entry/bzImage ]]; then
    install_outputs bzImage kernel.config
    log "cached kernel $key (built concurrently) -> $out_dir"
    exit 0
fi

start=$SECONDS

# --- source tree -------------------------------------------------------------------

src=$cache/src/$SRC_PACKAGE-$src_version
if [[ ! -f $src/.appliance-extracted ]]; then
    log "extracting $SRC_TARBALL ($src_version)"
    rm -rf "$src" "$src.tmp"
    mkdir -p "$src.tmp"
    tar -xJf "$SRC_TARBALL" -C "$src.tmp" --strip-components=1 --no-same-owner
    touch "$src.tmp/.appliance-extracted"
    mv -T "$src.tmp" "$src"
fi

# The object dir belongs to one source tree; start afresh when the source changes.
obj=$cache/obj
if [[ -d $obj && "$(cat "$obj/.appliance-source" 2>/dev/null)" != "$src" ]]; then
    rm -rf "$obj"
fi
mkdir -p "$obj"
printf '%s\n' "$src" >"$obj/.appliance-source"

kmake() {
    make -C "$src" O="$obj" ARCH=x86_64 \
        KBUILD_BUILD_USER=appliance KBUILD_BUILD_HOST=appliance-build "$@"
}

# --- configuration -------------------------------------------------------------------

log "configuring: tinyconfig + $fragment"
config_log=$obj/appliance-config.log
# merge_config.sh writes its temp files into the working directory.
if ! {
    kmake tinyconfig &&
        (cd "$obj" && "$src/scripts/kconfig/merge_config.sh" -m .config "$fragment") &&
        kmake olddefconfig
} >"$config_log" 2>&1; then
    cat "$config_log" >&2
    die "kernel configuration failed (log above, kept in $config_log)"
fi

# Every option the fragment names must have survived: `=value` lines exactly, `=n` and
# `is not set` lines as "not enabled", and every symbol must exist in this kernel.
known_symbols=$(
    find "$src" -name 'Kconfig*' -type f -exec \
        sed -n -E 's/^[[:space:]]*(menu)?config[[:space:]]+([A-Za-z0-9_]+)[[:space:]]*$/\2/p' {} + \
        | sort -u
)
problems=()
declare -A seen=()
while IFS= read -r line; do
    if [[ $line =~ ^CONFIG_([A-Za-z0-9_]+)=(.*)$ ]]; then
        sym=${BASH_REMATCH[1]}
        want=${BASH_REMATCH[2]}
    elif [[ $line =~ ^#\ CONFIG_([A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
        sym=${BASH_REMATCH[1]}
        want=n
    else
        continue
    fi
    if [[ -n ${seen[$sym]:-} ]]; then
        problems+=("CONFIG_$sym: named more than once in the fragment (only the last one counts)")
        continue
    fi
    seen[$sym]=1
    if ! grep -qxF "$sym" <<<"$known_symbols"; then
        problems+=("CONFIG_$sym: no such option in this kernel (wanted $want)")
        continue
    fi
    have=$(sed -n -E "s/^CONFIG_${sym}=(.*)$/\1/p" "$obj/.config")
    if [[ $want == n ]]; then
        [[ -z $have || $have == n ]] || problems+=("CONFIG_$sym: wanted not set, got $have")
    elif [[ $have != "$want" ]]; then
        problems+=("CONFIG_$sym: wanted $want, got ${have:-not set} (unmet dependency or overridden by a select)")
    fi
done <"$fragment"

if ((${#problems[@]})); then
    printf 'build-kernel: error: %d option(s) of %s did not survive into .config:\n' \
        "${#problems[@]}" "$fragment" >&2
    printf '  %s\n' "${problems[@]}" >&2
    printf 'build-kernel: inspect with: make -C %s O=%s ARCH=x86_64 menuconfig (search with /)\n' \
        "$src" "$obj" >&2
    exit 1
fi
log "config check passed"

if $config_only; then
    mkdir -p "$out_dir" || die "cannot create output directory $out_dir"
    cp "$obj/.config" "$out_dir/kernel.config"
    log "config only: wrote $out_dir/kernel.config"
    exit 0
fi

# --- build -----------------------------------------------------------------------------

log "building bzImage with $(nproc) jobs in $obj"
kmake -s -j"$(nproc)" bzImage

tmp_entry=$(mktemp -d "$cache/.$key.tmp.XXXXXX")
chmod 755 "$tmp_entry"
cp "$obj/arch/x86/boot/bzImage" "$tmp_entry/bzImage"
cp "$obj/.config" "$tmp_entry/kernel.config"
# Kept in the cache only: decodes addresses in an oops from a build without its vmlinux.
cp "$obj/System.map" "$tmp_entry/System.map"
rm -rf "$entry"
mv -T "$tmp_entry" "$entry"

install_outputs bzImage kernel.config
elapsed=$((SECONDS - start))
log "built kernel $key in $((elapsed / 60))m$((elapsed % 60))s: bzImage $(stat -c %s "$entry/bzImage") bytes"
log "cached at $entry; copied to $out_dir"
