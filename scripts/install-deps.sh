#!/bin/sh
# Installs, from Debian's packages, what lockex's demo and tests run against:
# a real ZooKeeper server (and the Java it runs on) and, with "test", kazoo,
# the Python ZooKeeper library whose Lock and Semaphore lockex interoperates
# with, and the tools the PID-1 and terminal tests drive lockex with (unshare
# and setsid from util-linux, an interactive bash) and iptables, which the
# nemesis partitions ensemble members with. Only missing packages are installed, so a second run costs nothing.
set -eu

want="zookeeper libslf4j-java default-jre-headless"
[ "${1:-}" = test ] && want="$want python3 python3-kazoo util-linux bash iptables"

missing=""
for pkg in $want; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
		missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing Debian packages:$missing (run as root, or: sudo apt-get install$missing)" >&2
	exit 1
fi
echo "install-deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
# A fresh machine may have no package lists yet; fetch them only when the
# first attempt cannot find a package.
apt-get install -y -q --no-install-recommends $missing >/dev/null ||
	{ apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $missing >/dev/null; }
