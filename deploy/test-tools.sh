#!/usr/bin/env bash
# Installs the programs the tests drive, beyond the Rust toolchain, when they
# are missing: the tests call it themselves (tests/tools/mod.rs), so `cargo
# test` needs nothing installed by hand on a Debian or Ubuntu machine.
#
#   deploy/test-tools.sh TOOL...
#
#   TOOL        checked with                       installed from (Debian)
#   java        java on PATH                       openjdk-17-jre-headless
#   mvn         mvn on PATH                        maven
#   python3     python3 on PATH                    python3
#   promtool    promtool on PATH                   prometheus
#   prometheus  prometheus on PATH                 prometheus
#   chromium    chromium, chromium-browser or      chromium
#               google-chrome on PATH
#   chromedriver  chromedriver on PATH             chromium-driver (the same
#                                                  Debian source as chromium,
#                                                  so their versions match)
#   pyyaml      python3 -c 'import yaml'           python3 -m pip install pyyaml,
#                                                  else python3-yaml
#
# Installing needs root or password-less sudo, and apt-get. Concurrent calls
# (test threads, several test binaries) are serialised with flock; the later
# ones find the tools installed. Exits non-zero with a message naming the
# package when a tool cannot be installed.
set -euo pipefail

die() { echo "test-tools.sh: $*" >&2; exit 1; }
log() { echo "test-tools.sh: $*" >&2; }

have() {
  case $1 in
    java | mvn | python3 | promtool | prometheus | chromedriver) command -v "$1" ;;
    chromium) command -v chromium || command -v chromium-browser || command -v google-chrome ;;
    pyyaml) command -v python3 && python3 -c 'import yaml' ;;
    *) false ;;
  esac >/dev/null 2>&1
}

package() {
  case $1 in
    java) echo openjdk-17-jre-headless ;;
    mvn) echo maven ;;
    python3) echo python3 ;;
    promtool | prometheus) echo prometheus ;;
    chromium) echo chromium ;;
    chromedriver) echo chromium-driver ;;
    pyyaml) echo python3-yaml ;;
    *) die "unknown tool '$1' (known: java mvn python3 promtool prometheus chromium chromedriver pyyaml)" ;;
  esac
}

missing() {
  local t out=()
  for t in "$@"; do have "$t" || out+=("$t"); done
  echo "${out[*]}"
}

(($#)) || die "usage: test-tools.sh TOOL..."
for t in "$@"; do package "$t" >/dev/null; done # rejects unknown names
[[ -z $(missing "$@") ]] && exit 0

lock_dir=${XDG_CACHE_HOME:-$HOME/.cache}/leadscore
mkdir -p "$lock_dir"
exec 9>"$lock_dir/test-tools.lock"
flock 9
# Another caller may have installed them while this one waited.
read -r -a todo <<<"$(missing "$@")"
((${#todo[@]})) || exit 0

as_root=()
if ((EUID != 0)); then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
  fi
fi
why=""
apt_install() { # packages...
  if ! command -v apt-get >/dev/null 2>&1; then
    why="no apt-get on PATH"
    return 1
  fi
  if ((EUID != 0 && ${#as_root[@]} == 0)); then
    why="not root, and no password-less sudo"
    return 1
  fi
  if [[ -z ${updated:-} ]]; then
    log "apt-get update"
    "${as_root[@]}" apt-get -q -o DPkg::Lock::Timeout=600 update >&2 || {
      why="apt-get update failed"
      return 1
    }
    updated=1
  fi
  log "apt-get install $*"
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    -o DPkg::Lock::Timeout=600 --no-install-recommends "$@" >&2 || {
    why="apt-get install $* failed"
    return 1
  }
}

# System packages first (python3 before PyYAML).
packages=()
for t in "${todo[@]}"; do
  [[ $t == pyyaml ]] && continue
  p=$(package "$t")
  [[ " ${packages[*]} " == *" $p "* ]] || packages+=("$p")
done
if ((${#packages[@]})); then
  apt_install "${packages[@]}" || true
fi
for t in "${todo[@]}"; do
  if [[ $t == pyyaml ]] && ! have pyyaml && have python3; then
    # pip serves any python3 on PATH (pyenv, venv); Debian's own python3
    # refuses pip installs (PEP 668) and takes the Debian package instead.
    python3 -m pip install -q pyyaml >&2 || apt_install python3-yaml || true
  fi
done

failed=() by_hand=()
for t in "${todo[@]}"; do
  if ! have "$t"; then
    p=$(package "$t")
    failed+=("$t (Debian package $p)")
    [[ " ${by_hand[*]} " == *" $p "* ]] || by_hand+=("$p")
  fi
done
if ((${#failed[@]})); then
  die "could not install ${failed[*]}${why:+: $why}; install by hand: apt-get install ${by_hand[*]}"
fi
log "installed: ${todo[*]}"
