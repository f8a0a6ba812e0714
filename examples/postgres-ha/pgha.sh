#!/usr/bin/env bash
# PostgreSQL in HA behind the balancer, in network namespaces: one primary and two
# streaming replicas (PostgreSQL 15 from Debian), a role endpoint on each node, the
# balancer host with the `db-rw` (5432) and `db-ro` (5433) services of
# balancer.toml, and a client. See the README, "Worked example: PostgreSQL in HA".
#
#   pgha.sh up                     topology, three nodes, role endpoints, balancer; waits for the checks
#   pgha.sh down                   stop everything, remove the namespaces and $PGHA_DIR
#   pgha.sh status                 `balancer status` of the example's daemon
#   pgha.sh drops                  connections the firewall dropped, per service
#
#   pgha.sh primary N              initdb and start node N (1..3) as a primary
#   pgha.sh replica N FROM         pg_basebackup node N from node FROM, start it replicating
#   pgha.sh start|stop N [MODE]    pg_ctl start / stop (MODE: fast, the default, or immediate)
#   pgha.sh promote N              pg_ctl promote: the replica becomes a primary
#   pgha.sh follow N FROM          make replica N stream from node FROM (after a failover)
#   pgha.sh sql N SQL              run SQL on node N through its local socket
#   pgha.sh role-endpoint N        node N's role endpoint on :8008, in the foreground
#   pgha.sh outsider               a second client, 192.0.2.50, outside the services' allow list
#   pgha.sh client CMD [ARGS]      run psql or pgbench on the client, PGHOST = the VIP
#   pgha.sh outside CMD [ARGS]     the same on the outsider
#
# Node N lives in namespace $PGHA_PREFIX-beN at 203.0.113.4N with its files in
# $PGHA_DIR/beN; the role endpoints run from a copy in $PGHA_DIR/bin, which the
# postgres user can reach wherever the clone is. The end-to-end tests
# (tests/tests/postgres*.rs) drive the same subcommands on topologies of their
# own (their own prefix and directory).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PGHA_PREFIX="${PGHA_PREFIX:-pgha}"
PGHA_DIR="${PGHA_DIR:-/tmp/pgha}"
PGBIN="${PGBIN:-/usr/lib/postgresql/15/bin}"
BALANCER="${PGHA_BALANCER:-$REPO/target/debug/balancer}"
ROLE_ENDPOINT="${PGHA_ROLE_ENDPOINT:-$REPO/target/debug/pg-role-endpoint}"
CONFIG="${PGHA_CONFIG:-$HERE/balancer.toml}"
# The daemon's pinned maps: [control].pin_dir of the configuration, on a BPF file
# system that `up` mounts (a daemon started with `ip netns exec` has a mount
# namespace of its own, in which /sys/fs/bpf is private to it).
PIN_DIR="$(sed -n 's/^pin_dir *= *"\(.*\)"/\1/p' "$CONFIG")"
BPFFS="$(dirname "$PIN_DIR")"

VIP=198.51.100.20
CLIENT_ADDR=198.51.100.2
OUTSIDER_ADDR=192.0.2.50
LB_FRONT=198.51.100.1
LB_BACK=203.0.113.1
NODES=(1 2 3)

die() {
    echo "pgha: $*" >&2
    exit 1
}

ns() { echo "$PGHA_PREFIX-$1"; }
node_ns() { ns "be$1"; }
node_addr() { echo "203.0.113.$((40 + $1))"; }
node_dir() { echo "$PGHA_DIR/be$1"; }

check_node() {
    [[ "${1:-}" =~ ^[1-3]$ ]] || die "node must be 1, 2 or 3, not '${1:-}'"
}

# PostgreSQL refuses to run as root: every server-side step runs as `postgres`
# (the user Debian's package creates) inside the node's namespace. It starts in
# /, not in the caller's directory, which may be one that postgres cannot enter
# (a clone in root's home): initdb and pg_ctl would complain of it.
as_postgres() {
    local n=$1
    shift
    (cd / && exec ip netns exec "$(node_ns "$n")" runuser -u postgres -- "$@")
}

# Version 15's own programs, not Debian's wrapper in /usr/bin, which picks a
# version by itself and costs a Perl start-up on every call.
pg_prog() {
    if [[ -x "$PGBIN/$1" ]]; then echo "$PGBIN/$1"; else echo "$1"; fi
}

# --- PostgreSQL nodes --------------------------------------------------------

# Settings of this node alone; postgresql.conf, which pg_basebackup copies to
# the replicas, includes it from outside the data directory.
write_node_conf() {
    local n=$1 dir
    dir="$(node_dir "$n")"
    as_postgres "$n" tee "$dir/node.conf" >/dev/null <<EOF
listen_addresses = '$(node_addr "$n")'
unix_socket_directories = '$dir'
cluster_name = 'be$n'
EOF
}

cmd_primary() {
    check_node "${1:-}"
    local n=$1 dir
    dir="$(node_dir "$n")"
    [[ -e "$dir/data" ]] && die "$dir/data exists already"
    as_postgres "$n" mkdir -p "$dir"
    as_postgres "$n" "$PGBIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 \
        --locale=C --no-instructions >"$dir/initdb.log" 2>&1 ||
        { cat "$dir/initdb.log" >&2; die "initdb of be$n failed"; }
    as_postgres "$n" tee -a "$dir/data/postgresql.conf" >/dev/null <<'EOF'

# --- postgres-ha example ---
port = 5432
wal_level = replica
max_wal_senders = 10
hot_standby = on
# No replication slots: keep enough WAL for a replica that falls behind for a while.
wal_keep_size = '256MB'
shared_buffers = '64MB'
log_line_prefix = '%m [%p] %q%a '
include_if_exists = '../node.conf'
EOF
    # Trust on the backends' network: with full NAT every client connects from
    # the balancer's SNAT address 203.0.113.9, and the replicas stream from
    # their own addresses there. A test topology only; use scram-sha-256 with
    # passwords anywhere else.
    as_postgres "$n" tee "$dir/data/pg_hba.conf" >/dev/null <<'EOF'
# TYPE  DATABASE     USER  ADDRESS          METHOD
local   all          all                    trust
local   replication  all                    trust
host    all          all   203.0.113.0/24   trust
host    replication  all   203.0.113.0/24   trust
EOF
    write_node_conf "$n"
    cmd_start "$n"
    echo "be$n: primary at $(node_addr "$n"):5432"
}

cmd_replica() {
    check_node "${1:-}"
    check_node "${2:-}"
    local n=$1 from=$2 dir
    dir="$(node_dir "$n")"
    [[ -e "$dir/data" ]] && die "$dir/data exists already"
    as_postgres "$n" mkdir -p "$dir"
    # -R writes standby.signal and primary_conninfo: asynchronous streaming
    # replication from node FROM; application_name names it in pg_stat_replication.
    as_postgres "$n" "$PGBIN/pg_basebackup" -D "$dir/data" -R -X stream -c fast \
        -d "host=$(node_addr "$from") port=5432 user=postgres application_name=be$n" \
        >"$dir/basebackup.log" 2>&1 ||
        { cat "$dir/basebackup.log" >&2; die "pg_basebackup of be$n from be$from failed"; }
    write_node_conf "$n"
    cmd_start "$n"
    echo "be$n: replica of be$from at $(node_addr "$n"):5432"
}

is_running() {
    local n=$1
    [[ -e "$(node_dir "$n")/data/postmaster.pid" ]] &&
        as_postgres "$n" "$PGBIN/pg_ctl" -D "$(node_dir "$n")/data" status >/dev/null 2>&1
}

cmd_start() {
    check_node "${1:-}"
    local n=$1 dir
    dir="$(node_dir "$n")"
    as_postgres "$n" "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start >/dev/null ||
        { tail -n 20 "$dir/postgres.log" >&2; die "be$n did not start"; }
}

cmd_stop() {
    check_node "${1:-}"
    local n=$1 mode=${2:-fast}
    if ! is_running "$n"; then
        echo "be$n: not running"
        return 0
    fi
    as_postgres "$n" "$PGBIN/pg_ctl" -D "$(node_dir "$n")/data" -m "$mode" -w -t 60 stop >/dev/null
    echo "be$n: stopped"
}

cmd_promote() {
    check_node "${1:-}"
    local n=$1
    # -w: returns once the node has left recovery and accepts writes.
    as_postgres "$n" "$PGBIN/pg_ctl" -D "$(node_dir "$n")/data" -w -t 60 promote >/dev/null
    echo "be$n: promoted"
}

cmd_follow() {
    check_node "${1:-}"
    check_node "${2:-}"
    local n=$1 from=$2
    # primary_conninfo is reloadable (PostgreSQL 13 and later), and the default
    # recovery_target_timeline = 'latest' follows the new primary's timeline.
    cmd_sql "$n" "ALTER SYSTEM SET primary_conninfo = 'host=$(node_addr "$from") port=5432 user=postgres application_name=be$n'" >/dev/null
    cmd_sql "$n" "SELECT pg_reload_conf()" >/dev/null
    echo "be$n: now streaming from be$from"
}

cmd_sql() {
    check_node "${1:-}"
    [[ $# -ge 2 ]] || die "usage: pgha.sh sql N SQL"
    local n=$1
    shift
    as_postgres "$n" "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 \
        -h "$(node_dir "$n")" -p 5432 -U postgres -d postgres -c "$*"
}

# The role endpoint runs as postgres, as PostgreSQL does: a network-facing
# server that needs no privilege, asking for the role over the node's socket.
# cargo builds it under target/ in the clone, which postgres cannot reach when
# the clone is in a directory that other users cannot enter (root's home, a
# `mktemp -d`, both 0700): it runs from a copy in $PGHA_DIR/bin instead.
stage_role_endpoint() {
    [[ -x "$ROLE_ENDPOINT" ]] ||
        die "no role endpoint at $ROLE_ENDPOINT: cargo build -p balancer-tests --bin pg-role-endpoint"
    local bin="$PGHA_DIR/bin/pg-role-endpoint" tmp
    if ! cmp -s "$ROLE_ENDPOINT" "$bin"; then
        install -d -m 0755 "$PGHA_DIR/bin"
        # Copied under another name and renamed: endpoints started together
        # may each stage it, and none may run a half-written file.
        tmp="$(mktemp "$PGHA_DIR/bin/.pg-role-endpoint.XXXXXX")"
        install -m 0755 "$ROLE_ENDPOINT" "$tmp"
        mv -f "$tmp" "$bin"
    fi
    runuser -u postgres -- test -x "$bin" ||
        die "user postgres cannot execute $bin: can other users enter $PGHA_DIR and every directory above it?"
    echo "$bin"
}

cmd_role_endpoint() {
    check_node "${1:-}"
    local n=$1 bin
    bin="$(stage_role_endpoint)"
    cd /
    exec ip netns exec "$(node_ns "$n")" runuser -u postgres -- "$bin" \
        --listen "$(node_addr "$n"):8008" --pghost "$(node_dir "$n")" --psql "$PGBIN/psql"
}

# --- clients -------------------------------------------------------------------

run_in() {
    local where=$1
    shift
    [[ $# -ge 1 ]] || die "usage: pgha.sh client|outside CMD [ARGS]"
    local prog
    prog="$(pg_prog "$1")"
    shift
    exec ip netns exec "$(ns "$where")" env PGHOST="$VIP" PGUSER=postgres PGDATABASE=postgres \
        PGCONNECT_TIMEOUT="${PGCONNECT_TIMEOUT:-3}" "$prog" "$@"
}

# A host on the client network with an address in 192.0.2.0/24, which neither
# service's allow list (198.51.100.0/24) admits. The balancer host gets a route
# back to it, so that were its packets let through, its connections would work:
# what stops them is the firewall in XDP, nothing else.
cmd_outsider() {
    local o sw lb
    o="$(ns outside)" sw="$(ns sw)" lb="$(ns lb)"
    if [[ ! -e "/run/netns/$o" ]]; then
        ip netns add "$o"
        ip -n "$o" link set lo up
    fi
    ip -n "$o" link add eth0 type veth peer name out netns "$sw"
    ip -n "$o" addr add "$OUTSIDER_ADDR/24" dev eth0
    ip -n "$o" link set eth0 up
    ip -n "$o" route add 198.51.100.0/24 dev eth0
    ip -n "$sw" link set out master brf up
    ip -n "$lb" route add 192.0.2.0/24 dev front
    echo "outsider: $OUTSIDER_ADDR on the client network"
}

# --- the whole example ---------------------------------------------------------

# The same wiring as the test harness's standard topology (tests/src/topology.rs):
#   client 198.51.100.2 --[brf]-- front 198.51.100.1 | lb | back 203.0.113.1 --[brb]-- be1..be3
build_topology() {
    local sw client lb
    sw="$(ns sw)" client="$(ns client)" lb="$(ns lb)"
    for n in sw client lb be1 be2 be3; do
        ip netns add "$(ns "$n")"
        ip -n "$(ns "$n")" link set lo up
    done
    ip -n "$sw" link add brf type bridge stp_state 0 forward_delay 0
    ip -n "$sw" link add brb type bridge stp_state 0 forward_delay 0
    ip -n "$sw" link set brf up
    ip -n "$sw" link set brb up

    ip -n "$client" link add eth0 type veth peer name c netns "$sw"
    ip -n "$client" addr add "$CLIENT_ADDR/24" dev eth0
    ip -n "$client" link set eth0 up
    ip -n "$sw" link set c master brf up

    ip -n "$lb" link add front type veth peer name lbf netns "$sw"
    ip -n "$lb" link add back type veth peer name lbb netns "$sw"
    ip -n "$lb" addr add "$LB_FRONT/24" dev front
    ip -n "$lb" addr add "$LB_BACK/24" dev back
    ip -n "$lb" link set front up
    ip -n "$lb" link set back up
    ip netns exec "$lb" sysctl -qw net.ipv4.ip_forward=1
    ip -n "$sw" link set lbf master brf up
    ip -n "$sw" link set lbb master brb up

    # Backends: on-link only, no default route (the balancer does full NAT).
    for n in "${NODES[@]}"; do
        local be
        be="$(node_ns "$n")"
        ip -n "$be" link add eth0 type veth peer name "be$n" netns "$sw"
        ip -n "$be" addr add "$(node_addr "$n")/24" dev eth0
        ip -n "$be" link set eth0 up
        ip -n "$sw" link set "be$n" master brb up
    done

    # XDP on veth pairs: checksums filled in before frames reach the program,
    # and the lb's veths able to receive redirected frames (their peers have
    # NAPI through GRO). See shared/TOOLCHAIN.md, "XDP on veth pairs".
    for dev in lbf lbb; do
        ip netns exec "$sw" ethtool -K "$dev" tx off gro on >/dev/null
    done
    for dev in front back; do
        ip netns exec "$lb" ethtool -K "$dev" tx off >/dev/null
    done
}

cmd_up() {
    [[ $EUID -eq 0 ]] || die "run as root: it creates network namespaces and attaches XDP"
    [[ -x "$PGBIN/initdb" ]] || die "no PostgreSQL 15 in $PGBIN: apt-get install postgresql-15 (or cargo xtask setup)"
    id postgres >/dev/null 2>&1 || die "no user postgres: apt-get install postgresql-15"
    [[ -x "$BALANCER" ]] || die "no balancer at $BALANCER: cargo build -p balancer-user"
    [[ -x "$ROLE_ENDPOINT" ]] ||
        die "no role endpoint at $ROLE_ENDPOINT: cargo build -p balancer-tests --bin pg-role-endpoint"
    if ip netns list | grep -q "^$PGHA_PREFIX-"; then
        die "namespaces $PGHA_PREFIX-* exist already: pgha.sh down first"
    fi
    [[ -e "$PGHA_DIR" ]] && die "$PGHA_DIR exists already: pgha.sh down first"

    echo "== topology (namespaces $PGHA_PREFIX-*)"
    build_topology
    cmd_outsider
    mkdir -p "$PGHA_DIR"
    # down removes only a directory with this mark in it.
    touch "$PGHA_DIR/.pgha"
    chown postgres: "$PGHA_DIR"

    echo "== PostgreSQL 15: one primary, two asynchronous streaming replicas"
    cmd_primary 1
    cmd_replica 2 1
    cmd_replica 3 1

    local role_endpoint
    role_endpoint="$(stage_role_endpoint)"
    echo "== role endpoints on :8008 (run by postgres from $role_endpoint)"
    for n in "${NODES[@]}"; do
        "$0" role-endpoint "$n" >"$(node_dir "$n")/role-endpoint.log" 2>&1 &
    done

    if ! mountpoint -q "$BPFFS"; then
        mkdir -p "$BPFFS"
        mount -t bpf bpf "$BPFFS"
    fi
    echo "== balancer: $BALANCER run --config $CONFIG (log: $PGHA_DIR/balancer.log)"
    # Created before the daemon starts, so that the wait below finds a file.
    : >"$PGHA_DIR/balancer.log"
    ip netns exec "$(ns lb)" "$BALANCER" run --config "$CONFIG" >"$PGHA_DIR/balancer.log" 2>&1 &
    echo $! >"$PGHA_DIR/balancer.pid"
    local log="$PGHA_DIR/balancer.log" tries=0
    until grep -q "balancer running" "$log"; do
        kill -0 "$(cat "$PGHA_DIR/balancer.pid")" 2>/dev/null ||
            { cat "$log" >&2; die "the balancer exited"; }
        ((++tries <= 100)) || die "the balancer did not start within 20 s: see $log"
        sleep 0.2
    done
    # The primary up in db-rw, the two replicas in db-ro: one check each.
    tries=0
    until [[ "$(grep -c "backend up" "$log")" -ge 3 ]]; do
        ((++tries <= 50)) || die "the health checks did not pass within 10 s: see $log"
        sleep 0.2
    done
    cmd_status
    cat <<EOF

Up. Writes: $VIP:5432 (db-rw, the primary). Reads: $VIP:5433 (db-ro, the replicas).
  $0 client psql -p 5432 -c 'SELECT inet_server_addr()'
  $0 client psql -p 5433 -c 'SELECT inet_server_addr()'
  tail -f $PGHA_DIR/balancer.log
  $0 down
EOF
}

cmd_status() {
    "$BALANCER" status --config "$CONFIG"
}

# New connections each service's firewall rules dropped, from the daemon's
# own counters (`balancer stats`).
cmd_drops() {
    "$BALANCER" stats --config "$CONFIG" --json |
        jq -r '.stats.services[] | "\(.name): \(.drops.firewall // 0) dropped by the firewall"'
}

cmd_down() {
    if [[ -f "$PGHA_DIR/balancer.pid" ]]; then
        local pid
        pid="$(cat "$PGHA_DIR/balancer.pid")"
        # SIGTERM: the daemon detaches its program and removes its pinned state.
        if kill -TERM "$pid" 2>/dev/null; then
            for _ in $(seq 1 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.2
            done
        fi
    fi
    for n in "${NODES[@]}"; do
        if [[ -e "/run/netns/$(node_ns "$n")" && -d "$(node_dir "$n")/data" ]]; then
            cmd_stop "$n" fast || cmd_stop "$n" immediate || true
        fi
    done
    local name
    for name in $(ip netns list | awk '{print $1}' | grep "^$PGHA_PREFIX-" || true); do
        # Whatever is left in the namespace (role endpoints, clients) goes with it.
        ip netns pids "$name" | xargs -r kill -9 2>/dev/null || true
        ip netns del "$name"
    done
    if mountpoint -q "$BPFFS"; then
        umount "$BPFFS"
        rmdir "$BPFFS"
    fi
    rmdir "$(dirname "$BPFFS")" 2>/dev/null || true
    if [[ -f "$PGHA_DIR/.pgha" ]]; then
        rm -rf "$PGHA_DIR"
    elif [[ -e "$PGHA_DIR" ]]; then
        echo "pgha: $PGHA_DIR has no .pgha mark; left alone" >&2
    fi
    echo "down"
}

usage() {
    # The comment at the top, up to the first line that is not one.
    awk 'NR == 1 { next } !/^#/ { exit } { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"
    exit 2
}

cmd="${1:-}"
[[ $# -gt 0 ]] && shift
case "$cmd" in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
drops) cmd_drops ;;
primary) cmd_primary "$@" ;;
replica) cmd_replica "$@" ;;
start) cmd_start "$@" ;;
stop) cmd_stop "$@" ;;
promote) cmd_promote "$@" ;;
follow) cmd_follow "$@" ;;
sql) cmd_sql "$@" ;;
role-endpoint) cmd_role_endpoint "$@" ;;
outsider) cmd_outsider ;;
client) run_in client "$@" ;;
outside) run_in outside "$@" ;;
*) usage ;;
esac
