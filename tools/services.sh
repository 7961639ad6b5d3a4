#!/usr/bin/env bash
# Start, stop or show the host services that eve-agent's integration tests and demo need:
# dockerd, virtlogd + libvirtd, and a container registry on 127.0.0.1:5000.
#
#   tools/services.sh start    start whatever is not already answering (safe to run twice)
#   tools/services.sh stop     stop what this script started (pid files in $RUN_DIR)
#   tools/services.sh status   one line per service; exit 0 only if all answer
#   tools/services.sh restart dockerd|libvirtd
#                              stop and start one daemon this script started (tests that
#                              check the agent survives a runtime restart)
#
# systemd is installed on our CI machines but is not PID 1, so the daemons are started
# directly, each in its own session, with its own log file. Nothing here changes the
# host's iptables/nftables ruleset: dockerd runs with --iptables=false --bridge=none and
# libvirt's "default" network (virbr0, which adds firewall rules) is never autostarted.
#
# Environment overrides: EVE_SERVICES_RUN_DIR, EVE_SERVICES_LOG_DIR, EVE_SERVICES_STATE_DIR,
# EVE_REGISTRY_ADDR (host:port on loopback).
set -euo pipefail

RUN_DIR=${EVE_SERVICES_RUN_DIR:-/run/eve-agent-services}
LOG_DIR=${EVE_SERVICES_LOG_DIR:-/var/log/eve-agent-services}
STATE_DIR=${EVE_SERVICES_STATE_DIR:-/var/lib/eve-agent-services}
REGISTRY_ADDR=${EVE_REGISTRY_ADDR:-127.0.0.1:5000}
REGISTRY_CONFIG=$RUN_DIR/registry.yml
REGISTRY_STORAGE=$STATE_DIR/registry
LIBVIRT_URI=qemu:///system
DOCKER_SOCK=/run/docker.sock

log() { printf '[services] %s\n' "$*"; }
die() { log "ERROR: $*"; exit 1; }

# --- probes: "does the service answer?" -------------------------------------------------

docker_up() { timeout 10 docker -H "unix://$DOCKER_SOCK" info >/dev/null 2>&1; }
virtlogd_up() { [ -S /run/libvirt/virtlogd-sock ] && pgrep -x virtlogd >/dev/null 2>&1; }
libvirt_up() { timeout 10 virsh -c "$LIBVIRT_URI" version >/dev/null 2>&1; }
registry_up() {
    curl -fsS --max-time 3 -o /dev/null "http://$REGISTRY_ADDR/v2/" 2>/dev/null
}

# --- helpers ----------------------------------------------------------------------------

# wait_for SECONDS DESCRIPTION LOGFILE PROBE: poll PROBE until it succeeds.
wait_for() {
    local seconds=$1 what=$2 logfile=$3 probe=$4 i
    for ((i = 0; i < seconds * 5; i++)); do
        if "$probe"; then
            return 0
        fi
        sleep 0.2
    done
    log "$what did not answer within ${seconds}s; last lines of $logfile:"
    tail -n 40 "$logfile" >&2 || true
    return 1
}

# pid_alive NAME: the pid recorded in $RUN_DIR/NAME.pid is running and is NAME.
pid_alive() {
    local name=$1 pidfile=$RUN_DIR/$1.pid pid comm
    [ -f "$pidfile" ] || return 1
    pid=$(cat "$pidfile" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [ "$comm" = "$name" ] || [ "$comm" = "${name:0:15}" ]
}

# spawn NAME LOGFILE CMD...: run CMD detached in its own session, stdin from /dev/null,
# output appended to LOGFILE, its pid (the same process after exec) in $RUN_DIR/NAME.pid.
spawn() {
    local name=$1 logfile=$2
    shift 2
    printf '\n=== %s: starting %s\n' "$(date -Is)" "$*" >>"$logfile"
    # shellcheck disable=SC2016 # expanded by the inner sh, on purpose
    setsid sh -c 'echo $$ >"$1"; shift; exec "$@"' sh "$RUN_DIR/$name.pid" "$@" \
        </dev/null >>"$logfile" 2>&1 9>&- &
    # Wait until the pid file is written (the exec follows immediately).
    local i
    for ((i = 0; i < 50; i++)); do
        [ -s "$RUN_DIR/$name.pid" ] && return 0
        sleep 0.1
    done
    die "could not start $name"
}

need_binary() {
    command -v "$1" >/dev/null 2>&1 || die "$1 not found: run 'make deps' (or tools/deps.sh apt) first"
}

# --- dockerd ----------------------------------------------------------------------------

start_docker() {
    if docker_up; then
        log "dockerd: already answering on $DOCKER_SOCK"
        return 0
    fi
    need_binary dockerd
    need_binary docker
    # /run is not a tmpfs on every machine: a pid file left by a dead dockerd blocks a start.
    local pid
    if [ -f /run/docker.pid ]; then
        pid=$(cat /run/docker.pid 2>/dev/null || true)
        if [ -z "$pid" ] || [ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" != dockerd ]; then
            rm -f /run/docker.pid
        fi
    fi
    if pid_alive dockerd; then
        log "dockerd: started earlier (pid $(cat "$RUN_DIR/dockerd.pid")), waiting for it"
    else
        log "dockerd: starting (log $LOG_DIR/dockerd.log)"
        spawn dockerd "$LOG_DIR/dockerd.log" dockerd \
            --host "unix://$DOCKER_SOCK" \
            --pidfile /run/docker.pid \
            --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
            --bridge=none
    fi
    wait_for 90 dockerd "$LOG_DIR/dockerd.log" docker_up
    log "dockerd: up ($(docker -H "unix://$DOCKER_SOCK" version --format '{{.Server.Version}}' 2>/dev/null))"
}

# --- virtlogd + libvirtd ----------------------------------------------------------------

start_virtlogd() {
    if virtlogd_up; then
        log "virtlogd: already running"
        return 0
    fi
    need_binary virtlogd
    log "virtlogd: starting (log $LOG_DIR/virtlogd.log)"
    mkdir -p /run/libvirt
    spawn virtlogd "$LOG_DIR/virtlogd.log" virtlogd
    wait_for 30 virtlogd "$LOG_DIR/virtlogd.log" virtlogd_up
    log "virtlogd: up"
}

# libvirt's "default" NAT network would create virbr0 and firewall rules in the root
# namespace. The agent makes its own bridges, so make sure libvirtd never autostarts it
# (this is what `virsh net-autostart --disable default` does).
no_default_network_autostart() {
    local link=/etc/libvirt/qemu/networks/autostart/default.xml
    if [ -e "$link" ] || [ -L "$link" ]; then
        log "libvirtd: disabling autostart of libvirt's default network ($link)"
        rm -f "$link"
    fi
}

start_libvirtd() {
    if libvirt_up; then
        log "libvirtd: already answering on $LIBVIRT_URI"
    else
        need_binary libvirtd
        need_binary virsh
        no_default_network_autostart
        if pid_alive libvirtd; then
            log "libvirtd: started earlier (pid $(cat "$RUN_DIR/libvirtd.pid")), waiting for it"
        else
            log "libvirtd: starting (log $LOG_DIR/libvirtd.log)"
            mkdir -p /run/libvirt
            spawn libvirtd "$LOG_DIR/libvirtd.log" libvirtd
        fi
        wait_for 60 libvirtd "$LOG_DIR/libvirtd.log" libvirt_up
        log "libvirtd: up ($(virsh -c "$LIBVIRT_URI" version --daemon 2>/dev/null | awk -F': ' '/daemon/ {print $2}'))"
    fi
    if virsh -c "$LIBVIRT_URI" net-list --name 2>/dev/null | grep -qx default; then
        log "libvirtd: WARNING: libvirt's default network is active (not started by this script)"
    fi
}

# --- registry ---------------------------------------------------------------------------

write_registry_config() {
    mkdir -p "$REGISTRY_STORAGE"
    local tmp=$REGISTRY_CONFIG.tmp
    cat >"$tmp" <<EOF
# Written by tools/services.sh: eve-agent's test registry, loopback only, no auth.
version: 0.1
log:
  level: info
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: $REGISTRY_STORAGE
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: $REGISTRY_ADDR
  headers:
    X-Content-Type-Options: [nosniff]
EOF
    mv -f "$tmp" "$REGISTRY_CONFIG"
}

start_registry() {
    if registry_up; then
        log "registry: already answering on http://$REGISTRY_ADDR/v2/"
        return 0
    fi
    need_binary docker-registry
    need_binary curl
    case "$REGISTRY_ADDR" in
        127.* | localhost:* | \[::1\]:*) ;;
        *) die "EVE_REGISTRY_ADDR must be a loopback address, got $REGISTRY_ADDR" ;;
    esac
    if pid_alive docker-registry; then
        log "registry: started earlier (pid $(cat "$RUN_DIR/docker-registry.pid")), waiting for it"
    else
        write_registry_config
        log "registry: starting on $REGISTRY_ADDR (config $REGISTRY_CONFIG, storage $REGISTRY_STORAGE, log $LOG_DIR/registry.log)"
        spawn docker-registry "$LOG_DIR/registry.log" docker-registry serve "$REGISTRY_CONFIG"
    fi
    wait_for 30 registry "$LOG_DIR/registry.log" registry_up
    log "registry: up on http://$REGISTRY_ADDR/v2/"
}

# --- stop -------------------------------------------------------------------------------

# stop_one NAME SECONDS: SIGTERM the pid we recorded for NAME, SIGKILL after SECONDS.
stop_one() {
    local name=$1 seconds=$2 pid i
    if ! pid_alive "$name"; then
        rm -f "$RUN_DIR/$name.pid"
        log "$name: not running (or not started by this script)"
        return 0
    fi
    pid=$(cat "$RUN_DIR/$name.pid")
    log "$name: stopping pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < seconds * 5; i++)); do
        pid_alive "$name" || break
        sleep 0.2
    done
    if pid_alive "$name"; then
        log "$name: still running after ${seconds}s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$RUN_DIR/$name.pid"
}

# --- main -------------------------------------------------------------------------------

# status_line NAME PROBE DETAIL PIDNAME: print one line; non-zero if PROBE fails.
status_line() {
    local name=$1 probe=$2 detail=$3 pidinfo=""
    if pid_alive "$4"; then pidinfo=" (pid $(cat "$RUN_DIR/$4.pid"), started by services.sh)"; fi
    if "$probe"; then
        printf '%-9s up    %s%s\n' "$name" "$detail" "$pidinfo"
    else
        printf '%-9s DOWN  %s\n' "$name" "$detail"
        return 1
    fi
}

status() {
    local rc=0
    status_line dockerd docker_up "unix://$DOCKER_SOCK" dockerd || rc=3
    status_line virtlogd virtlogd_up "/run/libvirt/virtlogd-sock" virtlogd || rc=3
    status_line libvirtd libvirt_up "$LIBVIRT_URI" libvirtd || rc=3
    status_line registry registry_up "http://$REGISTRY_ADDR/v2/" docker-registry || rc=3
    echo "logs: $LOG_DIR"
    return "$rc"
}

main() {
    local cmd=${1:-}
    case "$cmd" in
        start | stop | status) ;;
        restart)
            case "${2:-}" in
                dockerd | libvirtd) ;;
                *) echo "usage: $0 restart dockerd|libvirtd" >&2; exit 2 ;;
            esac
            ;;
        *) echo "usage: $0 start|stop|status|restart dockerd|libvirtd" >&2; exit 2 ;;
    esac
    if [ "$cmd" = status ]; then
        status
        return
    fi
    [ "$(id -u)" -eq 0 ] || die "must run as root (daemons need it)"
    mkdir -p "$RUN_DIR" "$LOG_DIR" "$STATE_DIR"
    # One start/stop at a time.
    exec 9>"$RUN_DIR/lock"
    flock -w 300 9 || die "another tools/services.sh is running"
    case "$cmd" in
        start)
            start_docker
            start_virtlogd
            start_libvirtd
            start_registry
            ;;
        restart)
            pid_alive "$2" || die "$2 was not started by this script: not restarting it"
            if [ "$2" = dockerd ]; then
                stop_one dockerd 60
                start_docker
            else
                stop_one libvirtd 30
                start_libvirtd
            fi
            ;;
        stop)
            stop_one docker-registry 10
            stop_one libvirtd 30
            stop_one virtlogd 10
            stop_one dockerd 60
            ;;
    esac
}

main "$@"
