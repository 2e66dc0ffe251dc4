#!/bin/sh
# PID 1 of the user-mode-linux guest started by tests/vm/run.sh. Not meant to be run by hand.
#
# Stage 1 (root = the host's / through read-only hostfs): put a tmpfs-backed overlay over /, pivot into it and
# re-exec as stage 2. Stage 2: mount proc/sys/dev/tmp, make the package's modules loadable, bring lo up, mount the
# host job directory read-write (hostfs), run job.sh with its stdout/stderr/exit code written there, power off.
#
# The kernel hands unknown `key=value` boot parameters to init as environment: SVCNET_JOB is the host job directory.
set -u
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
BUSYBOX=/bin/busybox

halt_now() {
	sync
	$BUSYBOX poweroff -f
	echo o >/proc/sysrq-trigger
	sleep 5
}

fail() {
	echo "svcnet-vm init: $*" >&2
	halt_now
	exit 1
}

if [ "${1:-}" != stage2 ]; then
	mount -t proc proc /proc || fail "mount /proc"
	mount -t tmpfs -o mode=0755 svcnet-overlay /run || fail "mount tmpfs on /run"
	mkdir -p /run/ovl/upper /run/ovl/work /run/ovl/root || fail "mkdir overlay dirs"
	if ! grep -qw overlay /proc/filesystems; then
		# overlayfs is a module in Debian's UML kernel and /lib/modules does not point at the modules yet.
		$BUSYBOX insmod "/usr/lib/uml/modules/$(uname -r)/kernel/fs/overlayfs/overlay.ko" || fail "load overlay.ko"
	fi
	mount -t overlay -o lowerdir=/,upperdir=/run/ovl/upper,workdir=/run/ovl/work svcnet-root /run/ovl/root \
		|| fail "mount overlay root"
	mkdir -p /run/ovl/root/run/ovl/old || fail "mkdir old root"
	umount /proc
	cd /run/ovl/root || fail "cd new root"
	pivot_root . run/ovl/old || fail "pivot_root"
	exec chroot . /bin/sh "$0" stage2
fi

mount -t proc proc /proc || fail "mount /proc"
mount -t sysfs sysfs /sys || fail "mount /sys"
mount -t devtmpfs devtmpfs /dev 2>/dev/null || mount -t tmpfs -o mode=0755 dev /dev || fail "mount /dev"
[ -e /dev/null ] || mknod -m 666 /dev/null c 1 3
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts 2>/dev/null
mount -t tmpfs -o mode=1777 shm /dev/shm
# The old root (host /, read-only hostfs) stays reachable under /run/ovl/old; hide it from the job's view of /run.
mount -t tmpfs -o mode=0755 run /run || fail "mount /run"
# /tmp stays the overlay's: host files there (scripts, a CARGO_TARGET_DIR) remain visible, writes stay in the guest.
mkdir -p /var/tmp /run/netns /run/lock
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null

# Module autoloading: the package ships modules for the guest kernel under /usr/lib/uml/modules/<release>.
release=$(uname -r)
if [ -d "/usr/lib/uml/modules/$release" ] && [ ! -e "/lib/modules/$release" ]; then
	mkdir -p /lib/modules
	ln -s "/usr/lib/uml/modules/$release" "/lib/modules/$release"
fi
modprobe_bin=/sbin/modprobe
if [ ! -x "$modprobe_bin" ]; then
	# No kmod on this host: busybox's modprobe reads modules.dep too; it dispatches on its own name.
	mkdir -p /run/svcnet-vm
	ln -sf $BUSYBOX /run/svcnet-vm/modprobe
	modprobe_bin=/run/svcnet-vm/modprobe
fi
echo "$modprobe_bin" >/proc/sys/kernel/modprobe

ip link set lo up 2>/dev/null || $BUSYBOX ip link set lo up
if [ -n "${SVCNET_NET:-}" ]; then
	# run.sh -n: eth0 is connected to a host tap device.
	ip addr add "$SVCNET_NET" dev eth0 || fail "address $SVCNET_NET on eth0"
	ip link set eth0 up || fail "eth0 up"
fi
hostname svcnet-vm 2>/dev/null

[ -n "${SVCNET_JOB:-}" ] || fail "no svcnet_job= on the kernel command line"
mkdir -p /run/svcnet-job || fail "mkdir job mount point"
mount -t hostfs -o "$SVCNET_JOB" svcnet-job /run/svcnet-job || fail "mount host job dir $SVCNET_JOB"
job=/run/svcnet-job
mkdir -p $job/out
echo booted >$job/out/booted

cd /
/bin/sh $job/job.sh >$job/out/stdout 2>$job/out/stderr </dev/null
echo $? >$job/out/rc.tmp
sync
mv $job/out/rc.tmp $job/out/rc
sync
halt_now
