#!/bin/sh
# Installs what the Kubernetes kit (make k8s-test, deploy/kube) runs the chart
# on, at pinned versions, only what is missing or at another version, so a
# second run costs nothing:
#   - a container runtime: Debian's podman with runc, conmon and catatonit,
#     configured for this kind of machine (see write_podman_config);
#   - Debian's etcd-server and busybox-static (the workload images' only file);
#   - ko, which builds the release image from .ko.yaml, with go install, and
#     Debian's docker-registry, which ko pushes to and pulls its base from on
#     127.0.0.1 (no other registry answers here);
#   - a real kube-apiserver and kube-controller-manager, built with
#     `go install`-like caching from the k8s.io/kubernetes module (about 8
#     minutes each once on 2 cores) into Go's bin directory (GOBIN, else
#     GOPATH/bin), where helm already lives, so they survive a clean clone.
# Prints the bin directory on stdout, for the caller's PATH.
#   scripts/install-k8s-tools.sh            everything
#   scripts/install-k8s-tools.sh apiserver  only kube-apiserver and
#                                           kube-controller-manager
#   scripts/install-k8s-tools.sh runtime    all but those two
set -eu

# The newest v1.34 patch release the Go module proxy serves; its staging
# repositories (k8s.io/api, k8s.io/apiserver, ...) are published as v0.34.4.
KUBE_VERSION=v1.34.4
KUBE_STAGING_VERSION=v0.34.4
KO_VERSION=v0.19.1

# Debian 12's packages, pinned to the versions the kit was written against. A
# point release of Debian may replace one; the error then names it.
DEBS="podman=4.3.1+ds1-8+deb12u1+b3
runc=1.1.5+ds1-1+deb12u1
conmon=2.1.6+ds1-1
catatonit=0.1.7-1+b2
golang-github-containers-common=0.50.1+ds1-4
etcd-server=3.4.23-4+b4
busybox-static=1:1.35.0-4+deb12u1+b1
docker-registry=2.8.2+ds1-1"

go=${GO:-go}
bin=$($go env GOBIN)
[ -n "$bin" ] || bin=$($go env GOPATH)/bin
cache=${XDG_CACHE_HOME:-$HOME/.cache}/lockex-k8s-tools

say() { echo "install-k8s-tools: $*" >&2; }

install_debs() {
	missing=""
	for pinned in $DEBS; do
		pkg=${pinned%%=*}
		want=${pinned#*=}
		have=$(dpkg-query -W -f='${Status} ${Version}' "$pkg" 2>/dev/null || true)
		[ "$have" = "install ok installed $want" ] || missing="$missing $pinned"
	done
	[ -z "$missing" ] && return 0
	if [ "$(id -u)" -ne 0 ]; then
		say "missing Debian packages:$missing (run as root, or: sudo apt-get install$missing)"
		exit 1
	fi
	say "installing$missing"
	export DEBIAN_FRONTEND=noninteractive
	# A fresh machine may have no package lists yet; fetch them only when
	# the first attempt cannot find a package.
	apt-get install -y -q --no-install-recommends $missing >/dev/null ||
		{ apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $missing >/dev/null; }
}

# podman's defaults do not run here: no systemd runs (PID 1 is not systemd)
# to manage cgroups on this host's cgroup v1/v2 hybrid, so podman manages
# them itself (cgroupfs) with runc, the runtime installed above; and podman's
# default ulimits (nofile and nproc 1048576) are above the hard limits, which
# root here cannot raise (no CAP_SYS_RESOURCE), so runc's setrlimit is refused. Without systemd's journal, events go to a file.
# A pod's infra container is podman's local pause image, which podman builds
# from Debian's catatonit, so no image is pulled for it. Written as a drop-in
# that the script owns whole, so rewriting it is idempotent.
write_podman_config() {
	# ulimit -Hn and -Hu, read where every shell can (dash has no -u).
	hard_nofile=$(awk '/^Max open files/ {print $(NF-1)}' /proc/self/limits)
	hard_nproc=$(awk '/^Max processes/ {print $(NF-1)}' /proc/self/limits)
	# podman lowers its own nproc limit to kernel.pid_max before it starts
	# conmon, and root here lacks CAP_SYS_RESOURCE, so a container can have
	# no more than that either.
	pid_max=$(cat /proc/sys/kernel/pid_max)
	nofile=65536
	nproc=65536
	[ "$hard_nofile" = unlimited ] || [ "$hard_nofile" -ge "$nofile" ] || nofile=$hard_nofile
	[ "$hard_nproc" = unlimited ] || [ "$hard_nproc" -ge "$nproc" ] || nproc=$hard_nproc
	[ "$pid_max" -ge "$nproc" ] || nproc=$pid_max
	dir=/etc/containers/containers.conf.d
	conf=$dir/50-lockex-k8s.conf
	new=$(cat <<EOF
# Written by lockex's scripts/install-k8s-tools.sh; rewritten on every run.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
)
	if [ "$(cat "$conf" 2>/dev/null || true)" != "$new" ]; then
		mkdir -p "$dir"
		printf '%s\n' "$new" >"$conf"
		say "wrote $conf"
	fi
}

check_podman() {
	out=$(podman info --format '{{.Host.OCIRuntime.Name}} {{.Host.CgroupManager}}' 2>&1) || {
		say "podman info failed: $out"
		exit 1
	}
	[ "$out" = "runc cgroupfs" ] || {
		say "podman runs with '$out', want 'runc cgroupfs' (see $conf)"
		exit 1
	}
}

ko_version() { "$bin/ko" version 2>/dev/null || true; }

install_ko() {
	[ "$(ko_version)" = "$KO_VERSION" ] && return 0
	say "go install ko $KO_VERSION into $bin"
	CGO_ENABLED=0 GOBIN=$bin $go install -trimpath -ldflags '-s -w' "github.com/google/ko@$KO_VERSION"
	got=$(ko_version)
	[ "$got" = "$KO_VERSION" ] || {
		say "$bin/ko reports '$got', want $KO_VERSION"
		exit 1
	}
}

kube_version() { "$bin/$1" --version 2>/dev/null || true; }

# kube-apiserver and kube-controller-manager from the k8s.io/kubernetes
# module. That module's go.mod replaces its staging repositories with
# directories of its own tree, which a dependent module cannot see, so a small
# module requires it and replaces each k8s.io/<staging repo> with the release
# of it that matches. Both commands share most of their packages, so the
# second build reuses the first one's build cache.
build_kube() {
	cmd=$1
	[ "$(kube_version "$cmd")" = "Kubernetes $KUBE_VERSION" ] && return 0
	say "building $cmd $KUBE_VERSION into $bin (takes about 8 minutes once)"
	mod=$cache/$cmd-$KUBE_VERSION
	mkdir -p "$mod"
	$go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" >/dev/null
	kmod=$($go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$KUBE_VERSION.mod
	staging=$(sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/src/.*#\1#p' "$kmod")
	[ -n "$staging" ] || { say "found no staging replacements in $kmod"; exit 1; }
	{
		echo "module lockex.local/$cmd"
		echo
		echo "go 1.24.0"
		echo
		echo "require k8s.io/kubernetes $KUBE_VERSION"
		echo
		echo "tool k8s.io/kubernetes/cmd/$cmd"
		echo
		echo "replace ("
		for m in $staging; do echo "	$m => $m $KUBE_STAGING_VERSION"; done
		echo ")"
	} >"$mod/go.mod"
	(cd "$mod" && $go mod tidy >/dev/null)
	major=${KUBE_VERSION#v}
	minor=${major#*.}
	minor=${minor%%.*}
	major=${major%%.*}
	ldflags="-s -w"
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldflags="$ldflags -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
		ldflags="$ldflags -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
	done
	(cd "$mod" && CGO_ENABLED=0 $go build -trimpath -ldflags "$ldflags" \
		-o "$bin/$cmd" "k8s.io/kubernetes/cmd/$cmd")
	got=$(kube_version "$cmd")
	[ "$got" = "Kubernetes $KUBE_VERSION" ] || {
		say "$bin/$cmd reports '$got', want 'Kubernetes $KUBE_VERSION'"
		exit 1
	}
}

build_control_plane() { build_kube kube-apiserver && build_kube kube-controller-manager; }

case "${1:-all}" in
apiserver) build_control_plane ;;
runtime) install_debs && write_podman_config && check_podman && install_ko ;;
all) install_debs && write_podman_config && check_podman && install_ko && build_control_plane ;;
*)
	say "unknown part '$1' (want apiserver, runtime or nothing for all)"
	exit 2
	;;
esac
echo "$bin"
