#!/bin/sh
# Start db_proxy_server, route_server, login_server and N msg_servers as
# separate processes on loopback, each from a TeamTalk-style .conf file,
# for `teamtalk bench` runs against separate daemons (docs/performance.md).
#
#   deploy/bench/cluster.sh start DIR [MSG_SERVERS] [PORT_BASE]
#   deploy/bench/cluster.sh stop DIR
#
# DIR holds the confs, the logs, the pids and the SQLite store (seed users
# into DIR/data first: `teamtalk user seed --data-dir DIR/data --create ...`).
# Ports: db PORT_BASE+600, route +200, login HTTP +80, login msg +100,
# msg_server k (1-based) +k-1 from PORT_BASE (default 28000). The daemons'
# binaries are taken from $BIN (default target/release).
set -eu
cmd=${1:?start or stop}
dir=${2:?directory}
bin=${BIN:-target/release}

stop() {
    if [ -f "$dir/pids" ]; then
        while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$dir/pids"
        rm -f "$dir/pids"
    fi
}

case $cmd in
stop) stop; exit 0 ;;
start) ;;
*) echo "usage: $0 start|stop DIR [MSG_SERVERS] [PORT_BASE]" >&2; exit 2 ;;
esac

n=${3:-1}
base=${4:-28000}
mkdir -p "$dir/data"
[ -f "$dir/cluster.secret" ] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/cluster.secret"
secret="ClusterSecretFile=$dir/cluster.secret"
db=$((base + 600)); route=$((base + 200)); http=$((base + 80)); reg=$((base + 100))

cat >"$dir/db.conf" <<CONF
ListenIP=127.0.0.1
ListenPort=$db
DataDir=$dir/data
$secret
CONF
cat >"$dir/route.conf" <<CONF
ListenIP=127.0.0.1
ListenMsgPort=$route
$secret
CONF
cat >"$dir/login.conf" <<CONF
ClientListenIP=127.0.0.1
ClientPort=$((base + 8))
HttpListenIP=127.0.0.1
HttpPort=$http
MsgServerListenIP=127.0.0.1
MsgServerPort=$reg
msfs=http://127.0.0.1:$((base + 700))/
discovery=http://127.0.0.1/api/discovery
$secret
CONF

start_daemon() { # name conf
    RUST_LOG=${RUST_LOG:-warn} "$bin/$1" -c "$2" >"$2.log" 2>&1 &
    echo $! >>"$dir/pids"
    echo "$1 pid $! conf $2"
}

: >"$dir/pids"
start_daemon db_proxy_server "$dir/db.conf"
start_daemon route_server "$dir/route.conf"
start_daemon login_server "$dir/login.conf"
sleep 0.5
k=1
while [ "$k" -le "$n" ]; do
    cat >"$dir/msg$k.conf" <<CONF
ListenIP=127.0.0.1
ListenPort=$((base + k - 1))
IpAddr1=127.0.0.1
IpAddr2=127.0.0.1
MaxConnCnt=100000
DBServerIP1=127.0.0.1
DBServerPort1=$db
LoginServerIP1=127.0.0.1
LoginServerPort1=$reg
RouteServerIP1=127.0.0.1
RouteServerPort1=$route
$secret
CONF
    start_daemon msg_server "$dir/msg$k.conf"
    k=$((k + 1))
done
sleep 1
while read -r pid; do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "a daemon (pid $pid) exited at start; its log:" >&2
        grep -l . "$dir"/*.log | xargs tail -n 5 >&2
        stop
        exit 1
    fi
done <"$dir/pids"
echo "login HTTP 127.0.0.1:$http; msg_servers from 127.0.0.1:$base"
