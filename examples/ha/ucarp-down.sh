#!/bin/sh
# ucarp --downscript: this node is no longer CARP master for the group's VIPs.
exec ${VIPCTL:-/usr/local/bin/vipctl} ha set "${VIP_GROUP:-web}" standby
