#!/usr/bin/env bash
# Debian packages the project needs on a fresh machine; installs only what is missing.
# Used by `make setup` (so `make demo` / `make test` work for a newcomer) and by .ci/run.
set -euo pipefail
need=()
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto mosquitto-clients)
command -v node >/dev/null || need+=(nodejs npm)
command -v dbus-daemon >/dev/null || need+=(dbus)
# dbus-python (for the mock BlueZ in tests) builds against these.
[ -f /usr/include/dbus-1.0/dbus/dbus.h ] || need+=(libdbus-1-dev)
[ -f /usr/include/glib-2.0/glib.h ] || need+=(libglib2.0-dev)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v ip >/dev/null || need+=(iproute2)
command -v openssl >/dev/null || need+=(openssl)
# make deb's test checks the sudoers drop-in with visudo.
command -v visudo >/dev/null || [ -x /usr/sbin/visudo ] || need+=(sudo)
[ ${#need[@]} -eq 0 ] && exit 0
echo "Installing Debian packages: ${need[*]}"
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq "${need[@]}" >/dev/null
