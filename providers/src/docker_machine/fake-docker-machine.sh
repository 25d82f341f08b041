#!/bin/sh
# A stand-in for the docker-machine command, for drover's tests (no cloud, no VM).
#
# Machines are directories under $MACHINE_STORAGE_PATH/machines/<name> (default
# ~/.docker/machine), as docker-machine keeps them: config.json is written first, the
# certificates when the machine is up. A machine's state (Running, Stopped, Error) is in
# its `state` file. Output and exit codes follow docker-machine's for the commands drover
# runs: create, rm, config, status, stop.
#
# Control files in $MACHINE_STORAGE_PATH/fake/ script failures:
#   create-fail   create leaves a half-created machine (state Error), prints the file's
#                 text on stderr and exits 1
#   create-hang   create leaves a half-created machine and never ends
#   create-gate   while it exists, create waits after writing config.json (and touches
#                 create-started-<name> first)
#   create-slow   while it exists, create waits after writing config.json with a helper
#                 process it started (as docker-machine starts its driver plugin), having
#                 written "<its pid> <the helper's pid>" to create-pids-<name>
#   rm-fail       holds a number N: the next N removals fail
# Every call is appended to fake/calls.log: "start<TAB>arg<TAB>arg..." (all its arguments)
# when it begins and "end<TAB>command<TAB>name<TAB>exit code" when it ends.

set -u

storage="${MACHINE_STORAGE_PATH:-${HOME:-}/.docker/machine}"
tab="$(printf '\t')"
all_args="$(IFS="$tab"; printf '%s' "$*")"

# Global options come before the command; drover passes only this one.
while [ $# -gt 0 ]; do
    case "$1" in
        --bugsnag-api-token=*) shift ;;
        -*) echo "flag provided but not defined: $1" >&2; exit 1 ;;
        *) break ;;
    esac
done

machines="$storage/machines"
control="$storage/fake"
mkdir -p "$machines" "$control"

log() {
    (IFS="$tab"; printf '%s\n' "$*") >>"$control/calls.log"
}

printf 'start%s%s\n' "$tab" "$all_args" >>"$control/calls.log"
command="${1:-}"
[ $# -gt 0 ] && shift

finish() { # exit code, name
    log end "$command" "${2:-}" "$1"
    exit "$1"
}

exists() {
    [ -f "$machines/$1/config.json" ]
}

require() { # name
    if [ -z "$1" ]; then
        echo "Error: No machine name(s) specified and no \"default\" machine exists" >&2
        finish 1
    fi
    if ! exists "$1"; then
        echo "Host does not exist: \"$1\"" >&2
        finish 1 "$1"
    fi
}

state_of() {
    cat "$machines/$1/state" 2>/dev/null || echo Error
}

create() {
    driver=""
    name=""
    while [ $# -gt 0 ]; do
        case "$1" in
            -d | --driver) driver="${2:-}"; shift 2 ;;
            --driver=*) driver="${1#--driver=}"; shift ;;
            --engine-* | --swarm* | --tls-san* | --"$driver"-*) shift ;;
            -*)
                echo "flag provided but not defined: ${1%%=*}" >&2
                finish 1
                ;;
            *)
                if [ -n "$name" ]; then
                    echo "Invalid command line. Found extra arguments [$1]" >&2
                    finish 1
                fi
                name="$1"
                shift
                ;;
        esac
    done
    case "$driver" in
        fakecloud | amazonec2 | digitalocean | google | generic | virtualbox | none) ;;
        *)
            echo "Driver \"$driver\" not found. Do you have the plugin binary \"docker-machine-driver-$driver\" accessible in your PATH?" >&2
            finish 1 "$name"
            ;;
    esac
    case "$name" in
        "" | -* | *[!a-zA-Z0-9.-]*)
            echo "Error creating machine: Invalid hostname specified. Allowed hostname chars are: 0-9a-zA-Z . -" >&2
            finish 1 "$name"
            ;;
    esac
    if [ -e "$machines/$name" ]; then
        echo "Host already exists: \"$name\"" >&2
        finish 1 "$name"
    fi
    echo "Running pre-create checks..."
    dir="$machines/$name"
    mkdir -p "$dir"
    echo Error >"$dir/state"
    printf '{"Name": "%s", "DriverName": "%s"}\n' "$name" "$driver" >"$dir/config.json"
    echo "Creating machine..."
    if [ -e "$control/create-gate" ]; then
        : >"$control/create-started-$name"
        while [ -e "$control/create-gate" ]; do sleep 0.02; done
    fi
    if [ -e "$control/create-slow" ]; then
        sleep 3600 </dev/null >/dev/null 2>&1 &
        echo "$$ $!" >"$control/.create-pids-$name"
        mv "$control/.create-pids-$name" "$control/create-pids-$name"
        while [ -e "$control/create-slow" ]; do sleep 0.02; done
        kill "$!" 2>/dev/null
    fi
    if [ -e "$control/create-hang" ]; then
        exec sleep 3600
    fi
    if [ -e "$control/create-fail" ]; then
        cat "$control/create-fail" >&2
        finish 1 "$name"
    fi
    sum=$(printf '%s' "$name" | cksum | cut -d ' ' -f 1)
    echo "192.0.2.$((sum % 250 + 1))" >"$dir/ip"
    for pem in ca cert key; do echo "fake $pem of $name" >"$dir/$pem.pem"; done
    echo Running >"$dir/state"
    echo "Docker is up and running!"
    finish 0 "$name"
}

remove() {
    name=""
    for arg in "$@"; do
        case "$arg" in
            -y | -f) ;;
            *) name="$arg" ;;
        esac
    done
    require "$name"
    left=$(cat "$control/rm-fail" 2>/dev/null || echo 0)
    if [ "$left" -gt 0 ]; then
        echo $((left - 1)) >"$control/rm-fail"
        echo "Error removing host \"$name\": fake cloud API unavailable" >&2
        finish 1 "$name"
    fi
    echo "About to remove $name"
    rm -rf "${machines:?}/$name"
    echo "Successfully removed $name"
    finish 0 "$name"
}

case "$command" in
    create) create "$@" ;;
    rm) remove "$@" ;;
    status)
        require "${1:-}"
        state_of "$1"
        finish 0 "$1"
        ;;
    stop)
        require "${1:-}"
        echo "Stopping \"$1\"..."
        echo Stopped >"$machines/$1/state"
        echo "Machine \"$1\" was stopped."
        finish 0 "$1"
        ;;
    config)
        require "${1:-}"
        if [ "$(state_of "$1")" != Running ]; then
            echo "Error checking TLS connection: Host is not running" >&2
            finish 1 "$1"
        fi
        dir="$machines/$1"
        printf -- '--tlsverify\n--tlscacert="%s"\n--tlscert="%s"\n--tlskey="%s"\n-H=tcp://%s:2376\n' \
            "$dir/ca.pem" "$dir/cert.pem" "$dir/key.pem" "$(cat "$dir/ip")"
        finish 0 "$1"
        ;;
    *)
        echo "fake docker-machine: command \"$command\" is not supported" >&2
        finish 2
        ;;
esac
