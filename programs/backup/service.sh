#!/bin/sh
# The backup container's command (stack/backup.py, `service_command`), run by `sh -c` as
# the image's `postgres` user: narrow the volumes' modes (copy-up gives a new volume the donor
# directories' 1777/3777), then `backup loop` (found on PATH: BIN_DIR comes first, backup_envs).
# Fails with one line naming the fix when the user does not own them (an old root-owned volume).
# Not uploaded: only programs/backup/{backup,restore,lib.sh} are (stack/backup.py SCRIPTS).
# Environment: BACKUP_DIR, BACKUP_METRICS_DIR (backup_envs).
# Symbolic modes: GNU chmod keeps a directory's setgid bit under a numeric mode.
if ! { chmod u=rwx,go=,-t "$BACKUP_DIR" 2>/dev/null \
       && chmod u=rwx,go=rx,g-s,-t "$BACKUP_METRICS_DIR" 2>/dev/null; }; then
  echo "backup: $BACKUP_DIR and $BACKUP_METRICS_DIR must be owned by $(id -un) (uid $(id -u));" \
    "see docs/backup.md, Upgrading" >&2
  exit 78
fi
exec backup loop
