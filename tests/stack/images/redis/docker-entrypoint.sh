#!/bin/sh
# The official image builds Redis with protected mode off, because inside a container the
# clients are other containers, never loopback; Debian's build keeps it on and would refuse the
# proxy. Pass the same default on the command line (a later flag in the command still wins).
set -eu
if [ "${1:-}" = redis-server ]; then
    shift
    set -- redis-server --protected-mode no "$@"
fi
exec "$@"
