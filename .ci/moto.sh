#!/usr/bin/env bash
# A local SQS-compatible server (moto) for the `sqs` feature's tests, kept under target/brokers/moto.
#
#   .ci/moto.sh start    start moto_server on 127.0.0.1 (installing moto[server] into a virtual
#                        environment under target/brokers/moto/venv when no `moto_server` is on
#                        PATH), wait until it answers, print `export VISQ_SQS_ENDPOINT=...` on stdout
#   .ci/moto.sh stop     stop it
#
# VISQ_SQS_PORT picks the port (default 4566); the pid file and the log live under
# target/brokers/moto/PORT. Only the loopback address is bound. Progress goes to stderr, so
# `eval "$(.ci/moto.sh start)"` sets the variable.
#
# moto is not AWS: see src/backend/sqs/mod.rs ("Against moto") for where it differs.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
port="${VISQ_SQS_PORT:-4566}"
base="$root/target/brokers/moto"
run="$base/$port"
pidfile="$run/moto.pid"
url="http://127.0.0.1:$port"

say() { echo "moto.sh: $*" >&2; }

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2> /dev/null; }

# moto's own API answers once the server is up; curl where there is one, else Python (which
# moto needs anyway).
answers() {
    if command -v curl > /dev/null 2>&1; then
        curl -sf -o /dev/null "$url/moto-api/"
    else
        python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
            "$url/moto-api/" 2> /dev/null
    fi
}

server_binary() {
    if command -v moto_server > /dev/null 2>&1; then
        command -v moto_server
        return
    fi
    if [ ! -x "$base/venv/bin/moto_server" ]; then
        say "no moto_server on PATH: installing moto[server] into $base/venv"
        if ! python3 -m venv "$base/venv" >&2; then
            # Debian's python3 keeps venv (ensurepip) in a package of its own.
            say "python3 cannot make a virtual environment: installing python3-venv with apt-get"
            apt-get update >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv >&2
            rm -rf "$base/venv"
            python3 -m venv "$base/venv" >&2
        fi
        "$base/venv/bin/pip" install --quiet 'moto[server]' >&2
    fi
    echo "$base/venv/bin/moto_server"
}

start() {
    mkdir -p "$run"
    if running; then
        say "moto is already running on $url (pid $(cat "$pidfile"))"
    else
        local bin
        bin="$(server_binary)"
        say "starting $bin on $url (log: $run/moto.log)"
        # Its own session, so that the server outlives this script and `stop` ends it.
        setsid "$bin" -H 127.0.0.1 -p "$port" > "$run/moto.log" 2>&1 < /dev/null &
        echo $! > "$pidfile"
        local tries=0
        until answers; do
            tries=$((tries + 1))
            if ! running || [ "$tries" -ge 150 ]; then
                say "moto did not come up on $url; the last lines of its log:"
                tail -n 30 "$run/moto.log" >&2 || true
                stop
                exit 1
            fi
            sleep 0.2
        done
        say "moto is up on $url"
    fi
    echo "export VISQ_SQS_ENDPOINT=$url"
}

stop() {
    if running; then
        local pid
        pid="$(cat "$pidfile")"
        kill "$pid"
        for _ in $(seq 50); do
            kill -0 "$pid" 2> /dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2> /dev/null; then
            kill -9 "$pid"
        fi
        say "moto on $url stopped"
    else
        say "moto on $url was not running"
    fi
    rm -f "$pidfile"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *)
        echo "usage: $0 start|stop" >&2
        exit 2
        ;;
esac
