# Shared steps of deploy/up and deploy/test (sourced, not executed). Every step is idempotent:
# it checks first and only does work when something is missing.
# Works on a fresh clone on a fresh Debian 12 machine; installs system packages with apt-get
# only when running as root.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO_ROOT/.venv"
VPY="$VENV/bin/python"

log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

# Run a step and report how long it took: step "what" command args...
step() {
  local what="$1"; shift
  local t0=$SECONDS
  log "$what"
  "$@" || { local rc=$?; log "$what: FAILED (exit $rc) after $((SECONDS - t0)) s"; return $rc; }
  log "$what: done in $((SECONDS - t0)) s"
}

is_root() { [ "$(id -u)" -eq 0 ]; }

apt_install() {
  if ! is_root; then
    printf '\033[1;31merror:\033[0m missing system packages: %s; install them as root: ' "$*" >&2
    printf 'apt-get install -y --no-install-recommends %s\n' "$*" >&2
    return 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "$@"
}

python_ok() {
  "$1" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 14) else 1)' \
    >/dev/null 2>&1
}

find_python() {
  local c
  for c in "${PYTHON:-}" python3 python3.11 python3.12 python3.13; do
    [ -n "$c" ] && command -v "$c" >/dev/null 2>&1 && python_ok "$c" && { echo "$c"; return; }
  done
  die "need Python 3.11-3.13 (set PYTHON=/path/to/python3.11)"
}

ensure_venv() {
  if [ -x "$VPY" ] && python_ok "$VPY"; then return; fi
  local py; py="$(find_python)"
  log "creating $VENV with $py"
  rm -rf "$VENV"
  if ! "$py" -m venv "$VENV"; then
    # Debian's python3 ships venv/ensurepip separately.
    rm -rf "$VENV"
    apt_install python3-venv || die "cannot create a virtualenv"
    "$py" -m venv "$VENV"
  fi
}

# pip install -e ".[dev]" - skipped when pyproject.toml is unchanged since the last install
# (BOOKING_ACCOUNTS_REINSTALL=1 forces it).
ensure_installed() {
  local stamp="$VENV/.booking-accounts-installed" want
  want="$(sha256sum "$REPO_ROOT/pyproject.toml" | cut -d' ' -f1)"
  if [ "${BOOKING_ACCOUNTS_REINSTALL:-0}" != "1" ] && [ -f "$stamp" ] \
     && [ "$(cat "$stamp")" = "$want" ]; then
    return
  fi
  (cd "$REPO_ROOT" && "$VPY" -m pip install --disable-pip-version-check -q -e ".[dev]")
  echo "$want" >"$stamp"
}

ensure_python_env() {
  ensure_venv
  ensure_installed
}

# java (17+) and mvn run the local Kafka broker; apt-get installs them when missing (root).
# openssl makes the secured broker's CA and certificate (deploy/local/tls.py).
ensure_java_and_maven() {
  local missing=()
  command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null 2>&1 || missing+=(maven)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi
}

# Debian's chromium for the browser tests (tests/browser, driven by Playwright with
# executable_path=/usr/bin/chromium: Playwright's own browser download is never used).
ensure_chromium() {
  if [ -x /usr/bin/chromium ]; then return; fi
  apt_install chromium
}
