#!/bin/sh
# The audit trail's one-shot writer (release/audit.py, VolumeSink): run by `sh -c` in a
# hardened container that mounts only the audit volume; programs/backup/lib.sh `audit_append`
# does the same in the backup container.
#
# Opens the file with O_APPEND (`>>`), takes an exclusive flock(2) on it (every writer does, so
# the chain never forks), hashes the last line (AUDIT_GENESIS for an empty file), appends the
# record with its `prev` in one printf, and prints `<line number> <sha256 of the new line>` (the
# head). Anything it cannot do (no flock, no sha256sum, not a regular file, a write error) exits
# non-zero: the append failed (fail closed).
#
# Environment (release/audit.py `append_env`):
#   AUDIT_LOG      the trail's file (AUDIT_DIR/AUDIT_FILE)
#   AUDIT_GENESIS  the `prev` of the first record (GENESIS)
#   AUDIT_RECORD   the record, one JSON object without `prev`
set -u
umask 022
f=$AUDIT_LOG
[ ! -e "$f" ] || [ -f "$f" ] || { echo "$f is not a regular file" >&2; exit 1; }
case "$AUDIT_RECORD" in *'}') ;; *) echo "not a JSON record" >&2; exit 1 ;; esac
for tool in flock sha256sum tail; do
    command -v "$tool" >/dev/null 2>&1 || { echo "no $tool: cannot chain the record" >&2; exit 1; }
done
exec 8>>"$f" || exit 1
flock -x 8 || { echo "cannot lock $f" >&2; exit 1; }
prev=$AUDIT_GENESIS
if [ -s "$f" ]; then
    last=$(tail -n 1 "$f") || exit 1
    prev=$(printf '%s' "$last" | sha256sum | cut -d' ' -f1)
fi
case "$prev" in *[!0-9a-f]*|"") echo "cannot hash the last line of $f" >&2; exit 1 ;; esac
[ "${#prev}" -eq 64 ] || { echo "cannot hash the last line of $f" >&2; exit 1; }
new="${AUDIT_RECORD%?},\"prev\":\"$prev\"}"
printf '%s\n' "$new" >&8 || exit 1
printf '%s %s\n' "$(wc -l < "$f" | tr -d ' ')" "$(printf '%s' "$new" | sha256sum | cut -d' ' -f1)"
