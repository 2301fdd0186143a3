#!/usr/bin/env bash
# A private RabbitMQ node for the `rabbitmq` feature's tests, isolated under target/brokers/rabbitmq.
#
#   .ci/rabbitmq.sh start        install rabbitmq-server if missing, start the node, wait until it
#                                is up, print `export VISQ_RABBITMQ_URL=...` on stdout
#   .ci/rabbitmq.sh stop         stop the node, then `epmd -kill`
#   .ci/rabbitmq.sh ctl ARGS...  rabbitmqctl against the node (the tests use it to drop connections)
#
# VISQ_RABBITMQ_PORT picks the AMQP port (default 5672); the node name, the distribution port
# (AMQP port + 20000), the Erlang cookie (HOME), the mnesia and log dirs, the pid file and an
# empty enabled-plugins file all live under target/brokers/rabbitmq/PORT, so the node never
# touches /var/lib/rabbitmq and two ports never share state. Only loopback addresses are bound.
# Progress goes to stderr, so `eval "$(.ci/rabbitmq.sh start)"` sets the variable.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
port="${VISQ_RABBITMQ_PORT:-5672}"
base="$root/target/brokers/rabbitmq/$port"
node="visq$port@localhost"
bin=/usr/lib/rabbitmq/bin

say() { echo "rabbitmq.sh: $*" >&2; }

node_env() {
    export HOME="$base/home"
    export RABBITMQ_NODENAME="$node"
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT="$port"
    export RABBITMQ_DIST_PORT="$((port + 20000))"
    export ERL_EPMD_ADDRESS=127.0.0.1
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
    export RABBITMQ_MNESIA_BASE="$base/mnesia"
    export RABBITMQ_LOG_BASE="$base/log"
    export RABBITMQ_PID_FILE="$base/rabbit.pid"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$base/enabled_plugins"
    export RABBITMQ_CONFIG_FILE="$base/rabbitmq"   # none written: the defaults, nothing from /etc
    export RABBITMQ_ADVANCED_CONFIG_FILE="$base/advanced.config"
}

ctl() { "$bin/rabbitmqctl" -n "$node" "$@"; }

install_if_missing() {
    if [ -x "$bin/rabbitmq-server" ]; then
        return
    fi
    say "rabbitmq-server is not installed: installing it with apt-get"
    apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y rabbitmq-server >&2
    # Where no policy-rc.d holds it back, the package starts the system's own node on the
    # same port; this script runs its own.
    if command -v invoke-rc.d > /dev/null; then
        invoke-rc.d rabbitmq-server stop >&2 || true
    fi
}

start() {
    install_if_missing
    mkdir -p "$base/home" "$base/mnesia" "$base/log"
    echo '[].' > "$base/enabled_plugins"
    node_env
    if ctl -q status > /dev/null 2>&1; then
        say "node $node is already running"
    else
        say "starting node $node on 127.0.0.1:$port (log: $base/server.out)"
        # Its own session, so that the node outlives this script and `stop` ends it.
        setsid "$bin/rabbitmq-server" > "$base/server.out" 2>&1 < /dev/null &
        # `wait` polls until the pid file exists, then until the node has booted.
        if ! ctl wait --timeout 90 "$RABBITMQ_PID_FILE" >&2; then
            say "node $node did not come up; the last lines of its output:"
            tail -n 30 "$base/server.out" >&2 || true
            exit 1
        fi
        say "node $node is up"
    fi
    echo "export VISQ_RABBITMQ_URL=amqp://guest:guest@127.0.0.1:$port/%2f"
}

stop() {
    node_env
    if [ -f "$RABBITMQ_PID_FILE" ] && ctl stop "$RABBITMQ_PID_FILE" >&2; then
        say "node $node stopped"
    else
        say "node $node was not running"
    fi
    rm -f "$RABBITMQ_PID_FILE"
    epmd -kill > /dev/null 2>&1 || true
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    ctl) shift; node_env; ctl "$@" ;;
    *) echo "usage: $0 start|stop|ctl ARGS..." >&2; exit 2 ;;
esac
