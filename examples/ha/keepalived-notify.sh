#!/bin/sh
# keepalived's vrrp_notify_fifo_script for vip (examples/ha/keepalived.conf).
#
# keepalived writes every VRRP state change, in order, as a line
# `INSTANCE "vip_GROUP" STATE PRIORITY` into the FIFO it passes as the last argument;
# each becomes `vipctl ha set GROUP ROLE`, one after the other, so vipd ends with the
# last state keepalived reached. notify_master/notify_backup would not do: keepalived runs
# those scripts concurrently, and a BACKUP right after a MASTER (two nodes starting
# together) could be applied first, leaving two active nodes.
#
# Arguments: the vipctl command (with --instance NAME or --socket PATH when vipd's is
# not the default), then the FIFO. Instances named other than vip_GROUP are ignored.
set -u
if [ $# -lt 2 ]; then
    echo "usage: $0 VIPCTL [ARGS...] FIFO" >&2
    exit 2
fi
n=$#
i=0
for a; do
    i=$((i + 1))
    if [ "$i" -eq 1 ]; then set --; fi
    if [ "$i" -lt "$n" ]; then set -- "$@" "$a"; else fifo=$a; fi
done
# keepalived sends SIGTERM before its last (STOP) events: read on until it closes the
# FIFO.
trap '' TERM
while read -r kind name state _priority; do
    [ "$kind" = INSTANCE ] || continue
    name=${name#\"}
    name=${name%\"}
    case $name in
        vip_*) group=${name#vip_} ;;
        *) continue ;;
    esac
    case $state in
        MASTER) role=active ;;
        BACKUP | STOP | DELETED) role=standby ;;
        FAULT) role=fault ;;
        *) continue ;;
    esac
    "$@" ha set "$group" "$role" >/dev/null ||
        echo "$0: $* ha set $group $role failed" >&2
done <"$fifo"
