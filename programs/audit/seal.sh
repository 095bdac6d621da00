#!/bin/sh
# Sets or clears kernel append-only on the audit trail (release/audit.py `seal`): run by
# `sh -c` in a one-shot container (root with only CAP_LINUX_IMMUTABLE and CAP_FOWNER, no
# network, read-only root, only the audit volume). Prints lsattr's line.
# Environment: AUDIT_LOG (the trail's file), SEAL_FLAG (`+a` to seal, `-a` to unseal).
f=$AUDIT_LOG
[ -f "$f" ] || { echo "no $f yet: seal after the first record" >&2; exit 1; }
chattr "$SEAL_FLAG" "$f" && lsattr "$f"
