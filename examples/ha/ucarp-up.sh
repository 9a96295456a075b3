#!/bin/sh
# ucarp --upscript: this node became CARP master for the group's VIPs.
# ucarp calls it as: ucarp-up.sh INTERFACE ADDRESS [EXTRA] where ucarp's --addr is a
# harmless sentinel (never a VIP: vip answers for the VIPs from XDP). The group name
# comes from VIP_GROUP (default "web"), vipctl's options from VIPCTL.
exec ${VIPCTL:-/usr/local/bin/vipctl} ha set "${VIP_GROUP:-web}" active
