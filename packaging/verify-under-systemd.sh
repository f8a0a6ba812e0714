#!/bin/bash
# Installs the package on Debian 12 booted with systemd as PID 1 (systemd-nspawn)
# and checks what balancer.service promises, with a TCP connection held through
# the VIP the whole time:
#   install enables and starts nothing; a refused file fails ExecStartPre with
#   nothing attached; enable --now returns once READY=1 (attached, maps filled);
#   reload; a refused reload fails while the daemon keeps running; restart
#   (SIGUSR2) and a package upgrade keep the connection; a stopped loop trips
#   the watchdog and the restarted daemon keeps the connection; warnings reach
#   the journal with their priority; the daemon has exactly the unit's
#   capabilities; stop detaches; purge removes /etc/balancer and /run/balancer.
#
# Not part of `cargo xtask test`: it needs systemd-container and debootstrap
# (apt-get install systemd-container debootstrap), Debian's package mirror on
# the first run (the root is cached), and about two minutes. As root:
#
#   cargo xtask package && packaging/verify-under-systemd.sh target/package/balancer_*.deb
#
# Everything lives in network namespaces named vus-* and a scratch copy of the
# root; both go on exit. Addresses are from the documentation ranges.
set -euo pipefail

deb=$(realpath "${1:?usage: $0 PACKAGE.deb}")
cache=${VUS_CACHE:-/var/tmp/balancer-vus-bookworm}
work=$(mktemp -d /var/tmp/balancer-vus.XXXXXX)
root=$work/root
fail() { echo "FAILED: $*" >&2; exit 1; }
pass() { echo "ok: $*"; }

cleanup() {
    set +e
    [ -n "${init:-}" ] && kill -0 "$init" 2>/dev/null && inside systemctl poweroff && sleep 3
    [ -n "${nspawn:-}" ] && kill "$nspawn" 2>/dev/null
    for ns in vus-client vus-lb vus-backend; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid"; done
        ip netns del "$ns" 2>/dev/null
    done
    umount "$work/bpf" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || fail "run as root"
command -v systemd-nspawn >/dev/null || fail "apt-get install systemd-container"
if [ ! -x "$cache/lib/systemd/systemd" ]; then
    command -v debootstrap >/dev/null || fail "apt-get install debootstrap"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,iproute2 \
        bookworm "$cache" http://deb.debian.org/debian
fi
cp -a "$cache" "$root"
cp "$deb" "$root/root/balancer.deb"

# client 198.51.100.2 -- front [vus-lb] back -- backend 203.0.113.11
ip netns add vus-client; ip netns add vus-lb; ip netns add vus-backend
ip link add front netns vus-lb type veth peer name eth0 netns vus-client
ip link add back netns vus-lb type veth peer name eth0 netns vus-backend
for ns in vus-client vus-lb vus-backend; do ip -n "$ns" link set lo up; done
ip -n vus-lb addr add 198.51.100.1/24 dev front; ip -n vus-lb link set front up
ip -n vus-lb addr add 203.0.113.1/24 dev back; ip -n vus-lb link set back up
ip -n vus-client addr add 198.51.100.2/24 dev eth0; ip -n vus-client link set eth0 up
ip -n vus-client route add default via 198.51.100.1
ip -n vus-backend addr add 203.0.113.11/24 dev eth0; ip -n vus-backend link set eth0 up
ip -n vus-backend route add default via 203.0.113.1
for ns in vus-client vus-backend; do
    ip netns exec "$ns" ethtool -K eth0 tx off >/dev/null
    ip netns exec "$ns" ethtool -K eth0 gro on >/dev/null
done

# An echo server that names itself, and a client that holds one connection
# through the VIP and sends a line whenever the test writes one to its FIFO.
setsid -f ip netns exec vus-backend python3 -c '
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("203.0.113.11", 9000)); s.listen(50)
def serve(c):
    with c:
        while (d := c.recv(4096)): c.sendall(b"be1 " + d)
while True: threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
' </dev/null >/dev/null 2>&1
held() {
    mkfifo "$work/held.fifo"
    setsid -f ip netns exec vus-client python3 -c '
import socket, sys
c = socket.create_connection(("198.51.100.10", 7000), timeout=5)
log = open(sys.argv[2], "a", buffering=1)
while True:
    for line in open(sys.argv[1]):
        try:
            c.sendall(line.strip().encode()); log.write(c.recv(4096).decode() + "\n")
        except OSError as e:
            log.write(f"ERROR {e}\n")
' "$work/held.fifo" "$work/held.log" </dev/null >/dev/null 2>&1
}
expect_held() {
    echo "$1" >"$work/held.fifo"
    for _ in $(seq 50); do grep -qx "be1 $1" "$work/held.log" 2>/dev/null && break; sleep 0.1; done
    grep -qx "be1 $1" "$work/held.log" || fail "the held connection did not answer $1: $(cat "$work/held.log")"
}

# systemd as PID 1 in the lb namespace. The container itself needs what the
# unit's sandbox then narrows: BPF and network capabilities, bpf(2) past
# nspawn's own seccomp filter, writable /proc/sys/net and a BPF file system.
mkdir "$work/bpf"; mount -t bpf bpf "$work/bpf"
SYSTEMD_NSPAWN_API_VFS_WRITABLE=network setsid systemd-nspawn -D "$root" --boot \
    --register=no --keep-unit --machine=vus --network-namespace-path=/run/netns/vus-lb \
    --capability=CAP_BPF,CAP_PERFMON,CAP_NET_ADMIN,CAP_NET_RAW \
    --system-call-filter="bpf perf_event_open" --bind="$work/bpf:/sys/fs/bpf" \
    </dev/null >"$work/console.log" 2>&1 &
sleep 0.5
nspawn=$(pgrep -f "systemd-nspawn -D $root" | head -1)
inside() { nsenter -t "$init" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
for _ in $(seq 100); do
    init=$(pgrep -P "$nspawn" | head -1 || true)
    [ -n "$init" ] && [ "$(inside systemctl is-system-running 2>/dev/null)" = running ] && break
    sleep 0.2
done
[ "$(inside systemctl is-system-running)" = running ] || fail "the container did not boot: $(tail "$work/console.log")"
pass "$(inside systemctl --version | head -1) is PID 1 in the container"
xdp_on_front() { ip -n vus-lb -d link show front | grep -c 'prog/xdp' || true; }

inside dpkg -i /root/balancer.deb >/dev/null
[ "$(inside systemctl is-enabled balancer)" = disabled ] && [ "$(inside systemctl is-active balancer)" = inactive ] \
    || fail "installing enabled or started the service"
pass "installed; neither enabled nor started"

printf '[node]\nname = "vus"\n' >"$root/etc/balancer/balancer.toml"
inside systemctl start balancer 2>/dev/null && fail "started on a refused file"
[ "$(xdp_on_front)" = 0 ] || fail "a refused file attached XDP"
inside systemctl reset-failed balancer
pass "a refused file fails ExecStartPre; nothing attached"

cat >"$root/etc/balancer/balancer.toml" <<'EOF'
[node]
name = "vus"
interfaces = ["front", "back"]
snat_addresses = ["203.0.113.9"]

[[service]]
name = "echo"
vip = "198.51.100.10"
port = 7000
protocol = "tcp"
health = { kind = "tcp", interval_ms = 200, timeout_ms = 100, rise = 1, fall = 2 }
backends = [{ address = "203.0.113.11:9000" }]
EOF
inside systemctl enable --now balancer 2>/dev/null
[ "$(xdp_on_front)" = 1 ] || fail "systemctl start returned before XDP was attached"
pass "enable --now: $(inside systemctl show balancer -p StatusText --value)"
for _ in $(seq 50); do [ "$(inside balancer status --json | grep -c '"state": "up"')" = 1 ] && break; sleep 0.1; done
held
expect_held start

inside systemctl reload balancer || fail "reload"
pass "reload: $(inside systemctl show balancer -p StatusText --value)"
cp "$root/etc/balancer/balancer.toml" "$work/good.toml"
echo 'oops = [' >>"$root/etc/balancer/balancer.toml"
inside systemctl reload balancer 2>/dev/null && fail "a refused reload succeeded"
[ "$(inside systemctl is-active balancer)" = active ] || fail "a refused reload stopped the service"
expect_held refused-reload
pass "refused reload fails; still active: $(inside systemctl show balancer -p StatusText --value)"
cp "$work/good.toml" "$root/etc/balancer/balancer.toml"

inside systemctl restart balancer
journal_has() {
    for _ in $(seq 50); do inside journalctl -u balancer -o cat | grep -q "$1" && return 0; sleep 0.1; done
    return 1
}
journal_has SIGUSR2 || fail "restart did not send SIGUSR2"
expect_held restart
pass "restart (SIGUSR2) keeps the connection"

inside dpkg -i /root/balancer.deb >/dev/null
expect_held upgrade
pass "package upgrade restarts the daemon and keeps the connection"

inside systemctl kill -s STOP --kill-who=main balancer
for _ in $(seq 30); do [ "$(inside systemctl show balancer -p NRestarts --value)" != 0 ] && break; sleep 1; done
journal_has "Watchdog timeout" || fail "no watchdog timeout"
for _ in $(seq 50); do [ "$(inside systemctl is-active balancer)" = active ] && break; sleep 0.1; done
expect_held watchdog
pass "a stopped loop trips the watchdog; the restarted daemon keeps the connection"

inside journalctl -u balancer -p warning -o cat | grep -q '"event":"reload_refused"' \
    || fail "the refused reload is not in the journal as a warning"
pass "journal: one JSON line per event, warnings at their priority"

pid=$(inside systemctl show balancer -p MainPID --value)
caps=$(inside grep CapEff "/proc/$pid/status" | cut -f2)
[ "$caps" = 000000c000003000 ] || fail "capabilities $caps, not CAP_BPF CAP_PERFMON CAP_NET_ADMIN CAP_NET_RAW"
inside nsenter -t "$pid" -m touch /etc/balancer/x 2>/dev/null && fail "/etc is writable to the service"
pass "the daemon has CAP_BPF CAP_PERFMON CAP_NET_ADMIN CAP_NET_RAW only; / is read-only to it"
inside systemd-analyze security balancer --no-pager | tail -1

inside systemctl stop balancer
[ "$(xdp_on_front)" = 0 ] || fail "stop left XDP attached"
[ ! -e "$work/bpf/balancer" ] || fail "stop left pinned state"
pass "stop detaches and unpins"

inside dpkg -r balancer >/dev/null
[ -e "$root/etc/balancer/balancer.toml" ] || fail "remove deleted the configuration"
inside dpkg -P balancer >/dev/null
[ ! -e "$root/etc/balancer" ] && [ ! -e "$root/run/balancer" ] || fail "purge left /etc/balancer or /run/balancer"
pass "remove keeps the configuration; purge removes it and /run/balancer"
echo "all checks passed"
