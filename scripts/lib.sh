# shellcheck shell=bash
# Helpers the scripts share (sourced, never run). Before sourcing, a script may set `script_name` (what
# its messages start with; default: its file name without .sh) and `fail_status` (its exit code on
# failure; default 1).
#
#   step TEXT...                 a section heading, on stderr
#   fail TEXT...                 "<script>: TEXT" on stderr, then exit with fail_status
#   usage                        the script's opening comment (the lines after #!), then exit 2
#   python_venv DIR SPEC...      a virtualenv at DIR with pip SPECs installed (`-r FILE` works); installs
#                                again only when the SPECs or the files they name change
#   free_port                    a free TCP port on 127.0.0.1
#   wait_http URL [SECONDS] [PID]  until URL answers 2xx; returns 1 (saying why) after SECONDS (default
#                                20), or at once when process PID has exited: `wait_http ... || fail ...`
#   apt_install PACKAGE...       Debian packages (apt-get update first, once per script; as root or with sudo)
#   need_command CMD PACKAGE     apt_install PACKAGE unless CMD is on PATH, then fail if it still is not

script_name=${script_name:-$(basename "$0" .sh)}
fail_status=${fail_status:-1}

step() { printf '\n==> %s\n' "$*" >&2; }
fail() { echo "$script_name: $*" >&2; exit "$fail_status"; }
usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0" >&2; exit 2; }

python_venv() {
  local dir=$1 stamp want arg files=()
  shift
  for arg in "$@"; do [ -f "$arg" ] && files+=("$arg"); done
  want=$( { printf '%s\n' "$@"; [ "${#files[@]}" -eq 0 ] || cat "${files[@]}"; } | sha256sum | cut -d' ' -f1)
  stamp="$dir/.installed.sha256"
  if [ -x "$dir/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  command -v python3 >/dev/null || fail "python3 is needed (apt-get install -y python3 python3-venv)"
  echo "$script_name: installing $* into $dir (pip; once per change of these pins)" >&2
  [ -x "$dir/bin/python" ] || python3 -m venv "$dir" || fail "cannot create $dir (apt-get install -y python3-venv)"
  "$dir/bin/pip" install --quiet --disable-pip-version-check "$@" >&2 || fail "pip could not install $*"
  echo "$want" >"$stamp"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_http() {
  local url=$1 seconds=${2:-20} pid=${3:-} deadline
  deadline=$(( $(date +%s) + seconds ))
  until curl -sf -o /dev/null "$url"; do
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      echo "$script_name: the process behind $url exited before answering" >&2
      return 1
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "$script_name: no answer from $url within $seconds s" >&2
      return 1
    fi
    sleep 0.05
  done
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if [ "$apt_updated" -eq 0 ]; then
    as_root apt-get update
    apt_updated=1
  fi
  as_root apt-get install -y --no-install-recommends "$@"
}

need_command() {
  local cmd=$1 package=$2
  command -v "$cmd" >/dev/null && return 0
  echo "$script_name: installing $package from Debian (for $cmd)" >&2
  apt_install "$package" >&2 || true
  command -v "$cmd" >/dev/null || fail "$cmd is missing after apt-get install $package"
}
