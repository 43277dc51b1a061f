#!/bin/sh
# PID 1 of the VM rig's guest (copied to /init of the initramfs by run.sh; editing it rebuilds the image).
# Brings up dbus, bluetoothd and two btvirt controllers, runs /share/run.sh, stores its exit code in
# /share/exit-code and powers off. Rig steps are logged with guest uptime to /share/rig.log.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8

mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs run /run
mount -t tmpfs tmp /tmp

halt_now() { sync; echo o > /proc/sysrq-trigger; sleep 30; }

modprobe -a virtio_pci 9pnet_virtio 9p || { echo "rig: modprobe 9p failed"; halt_now; }
mkdir -p /share
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 share /share || { echo "rig: 9p mount failed"; halt_now; }

RIGLOG=/share/rig.log
step() { echo "[$(cut -d' ' -f1 /proc/uptime)s] $*" >> "$RIGLOG"; }
fail() { step "FAILED: $*"; echo "rig: FAILED: $*"; halt_now; }
step "userspace up, kernel $(uname -r)"

modprobe -a bluetooth hci_vhci rfcomm bnep || fail "modprobe bluetooth modules"

# The kernel segments a whole L2CAP SDU before sending and a socket buffer caps what fits; large SDUs need large
# buffers (vm-rig.md: "SDU does not fit in SO_SNDBUF" -> EAGAIN after the 40 s send timeout). Allow 4 MiB.
for k in wmem_max rmem_max wmem_default rmem_default; do
    echo 4194304 > /proc/sys/net/core/$k || fail "sysctl net.core.$k"
done

# Quirk seen in the rig: with EATT (bluetoothd's default [GATT] Channels = 3), the send MTU of an application's
# LE CoC channel changed from 65535 to 517 (the ATT MTU) right after accept and sends failed with EMSGSIZE.
# bluer's README recommends Channels = 1 too (EATT can reorder GATT data). docs/vm-rig.md has the details.
sed -i '/^\[GATT\]/a Channels = 1' /etc/bluetooth/main.conf
grep -q '^Channels = 1' /etc/bluetooth/main.conf || fail "could not set [GATT] Channels = 1"

# A task stuck in D state for a minute is a kernel deadlock in this rig (6.1.0-50 deadlocked on LE connect): have
# the kernel report it after 60 s instead of 120, so that run.sh's console watcher stops the guest sooner.
echo 60 > /proc/sys/kernel/hung_task_timeout_secs 2>/dev/null || step "no hung-task detector in this kernel"

mkdir -p /run/dbus
dbus-daemon --system --fork || fail "dbus-daemon"
# -E (experimental): Adapter1.ConnectDevice needs it (UnknownMethod otherwise).
/usr/libexec/bluetooth/bluetoothd -n -E > /share/bluetoothd.log 2>&1 &
# Two dual-mode virtual controllers hci0/hci1 joined by an emulated radio.
btvirt -l2 > /share/btvirt.log 2>&1 &

# Waits are budgeted in guest seconds (uptime), not loop turns: under host load a 0.1 s sleep takes far longer.
uptime_s() { cut -d. -f1 /proc/uptime; }
wait_for() { # wait_for SECONDS WHAT COMMAND...: runs COMMAND until it succeeds, or fails the rig after SECONDS
    local until=$(( $(uptime_s) + $1 )) what=$2; shift 2
    until "$@"; do
        [ "$(uptime_s)" -lt "$until" ] || fail "$what"
        sleep 0.1
    done
}
both_present() { [ -e /sys/class/bluetooth/hci0 ] && [ -e /sys/class/bluetooth/hci1 ]; }
on_dbus() {
    dbus-send --system --print-reply --dest=org.bluez "/org/bluez/hci$1" org.freedesktop.DBus.Properties.Get \
        string:org.bluez.Adapter1 string:Address > /dev/null 2>&1
}
both_on_dbus() { on_dbus 0 && on_dbus 1; }

wait_for 60 "hci0/hci1 did not appear" both_present
step "hci0 and hci1 present"

# bluetoothd must have taken both adapters in before btmgmt changes their settings: btmgmt's power off during
# bluetoothd's own set-up of an adapter was seen to leave that adapter out of bluetoothd altogether (hci0 never
# appeared on D-Bus, and a suite started then skipped every test for want of it), and bluetoothd turns SSP back
# on while it sets an adapter up.
wait_for 90 "bluetoothd did not publish /org/bluez/hci0 and hci1 on D-Bus" both_on_dbus
step "bluetoothd has hci0 and hci1"

for n in 0 1; do
    btmgmt -i $n power off > /dev/null &&
    btmgmt -i $n ssp off > /dev/null &&
    btmgmt -i $n connectable on > /dev/null &&
    btmgmt -i $n power on > /dev/null || fail "btmgmt hci$n"
done
# Advertising quirk: vm-rig.md enables `btmgmt -i 0 advertising on` so a plain LE connect to hci0 completes, but
# that hides any advertisement registered over D-Bus. The hw-tests advertise over D-Bus themselves (as on real
# laptops), so mgmt advertising is deliberately left off here.
step "controllers configured"

powered() {
    dbus-send --system --print-reply --dest=org.bluez "/org/bluez/hci$1" org.freedesktop.DBus.Properties.Get \
        string:org.bluez.Adapter1 string:Powered 2>/dev/null | grep -q 'boolean true'
}
both_powered() { powered 0 && powered 1; }
wait_for 30 "bluetoothd does not see hci0 and hci1 powered" both_powered
step "rig ready (hci0 and hci1 powered, on D-Bus)"

cd /share
# Output goes to the console (live) and to /share/output.log.
{ /bin/bash /share/run.sh; echo $? > /tmp/rc; } 2>&1 | tee /share/output.log
rc=$(cat /tmp/rc 2>/dev/null || echo 126)
dmesg > /share/dmesg.log 2>&1
echo $rc > /share/exit-code
step "binary exited with $rc"
halt_now
