#!/usr/bin/env bash
# A Docker engine of the lab's own, for CI and for machines where none runs (root):
#
#   lab/engine.sh start      # prints the DOCKER_HOST to export
#   lab/engine.sh stop       # stops it by its PID
#
# It leaves the host's firewall alone (--iptables=false, --ip-masq=false) and makes no
# default bridge (--bridge=none): the lab's networks are internal and need neither.
# Its own socket, pidfile and exec-root keep it apart from any other engine on the
# machine; its data-root stays between runs, so the base image is built once.
set -euo pipefail
state=${KEXLAB_ENGINE_STATE:-/var/lib/kexlab-lab/docker}
run=${KEXLAB_ENGINE_RUN:-/run/kexlab-lab}
pidfile=$run/dockerd.pid
host=unix://$run/docker.sock

running() { [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

case ${1:-} in
  start)
    if running && DOCKER_HOST=$host docker info >/dev/null 2>&1; then
      echo "$host"
      exit 0
    fi
    command -v dockerd >/dev/null || { echo "engine: dockerd is not installed (apt install docker.io)" >&2; exit 2; }
    mkdir -p "$state" "$run"
    dockerd --iptables=false --ip-masq=false --bridge=none \
      --data-root "$state" --exec-root "$run/exec" --pidfile "$pidfile" -H "$host" \
      >"$run/dockerd.log" 2>&1 &
    for _ in $(seq 60); do
      if DOCKER_HOST=$host docker info >/dev/null 2>&1; then
        echo "$host"
        exit 0
      fi
      kill -0 $! 2>/dev/null || break
      sleep 0.5
    done
    echo "engine: dockerd did not start; the end of $run/dockerd.log:" >&2
    tail -5 "$run/dockerd.log" >&2
    kill $! 2>/dev/null || true
    exit 1
    ;;
  stop)
    running || exit 0
    pid=$(cat "$pidfile")
    kill "$pid"
    for _ in $(seq 60); do
      kill -0 "$pid" 2>/dev/null || exit 0
      sleep 0.5
    done
    echo "engine: dockerd $pid did not stop in 30 s; killing it" >&2
    kill -9 "$pid" 2>/dev/null || true
    ;;
  *)
    echo "usage: lab/engine.sh start|stop" >&2
    exit 2
    ;;
esac
