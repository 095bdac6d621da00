# shellcheck shell=sh
# Shared functions for backup.sh and restore.sh (POSIX sh: busybox ash in the
# postgres:*-alpine image, dash on Debian). Sourced, never executed.
#
# A backup is "good" when both files exist:
#   postgres-YYYYmmddTHHMMSSZ.dump          pg_dump custom format (compressed)
#   postgres-YYYYmmddTHHMMSSZ.dump.sha256   "<sha256>  <file name>"
# Work in progress only ever has a name starting with ".tmp-", which nothing
# else matches, and the .dump is renamed into place last.

log() { printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
# die MESSAGE [STATUS]: log "ERROR: MESSAGE" and exit with STATUS (default 1).
# The status is the exit code only, never part of the message.
die() { log "ERROR: $1"; AUDIT_ERROR="$1"; exit "${2:-1}"; }

# ---------------------------------------------------------------- audit trail
# JSON lines appended to AUDIT_LOG (the audit volume; release/audit.py defines the record,
# docs/security.md "Audit trail"). Same keys in the same order:
#   time actor stack operation from to backup_id result duration_ms error reason checks
# `audit_begin OPERATION` at the start of an operation appends the intent record (`started`)
# and installs an EXIT trap, so exactly one outcome record follows however the run ends:
# exit 0 -> ok; 2, 3, 75 (bad backup, refused target, lock held) -> refused; anything else
# -> failed. Callers set AUDIT_BACKUP_ID on the way; die/refuse set AUDIT_ERROR (their own
# one-line messages, never a secret).
# AUDIT_FAIL_CLOSED=1 (the default; security.audit.failClosed): an intent that cannot be
# appended stops the run before it acts (exit 74, nothing done); an outcome that cannot be
# appended turns exit 0 into exit 74. 0: a logged warning, and the run goes on.
# The line is one printf to a file opened with O_APPEND (`>>`), shorter than PIPE_BUF, so
# concurrent writers never interleave. Unset or empty AUDIT_LOG: nothing is recorded.
# Hash chain (issue 21, item 6; release/audit.py APPEND_SCRIPT does the same): under an
# exclusive flock(2) on the file, the line gets `"prev":"<sha256 of the last line>"` (the
# genesis value for an empty file) as its last key. No flock, no hash: the append fails.
AUDIT_LOG="${AUDIT_LOG:-}"; AUDIT_OPERATION=""; AUDIT_BACKUP_ID=""; AUDIT_ERROR=""; AUDIT_START=0
AUDIT_FAIL_CLOSED="${AUDIT_FAIL_CLOSED:-1}"
# Exit status of a run whose audit record cannot be appended (EX_IOERR).
AUDIT_EXIT=74

# A JSON string (quoted) or null for an empty value: backslash, quote and control characters
# escaped or dropped, at most 1000 characters.
json_string() {
    [ -n "$1" ] || { printf 'null'; return; }
    printf '"%s"' "$(printf '%s' "$1" | tr -d '\000-\037\177' | cut -c1-1000 | sed 's/\\/\\\\/g; s/"/\\"/g')"
}

audit_actor() {
    _a="${PAPER_TRADING_ACTOR:-${AUDIT_ACTOR_DEFAULT:-}}"
    [ -n "$_a" ] || _a=$(id -un 2>/dev/null) || _a="uid:$(id -u)"
    printf '%s' "$_a"
}

# audit_record OPERATION RESULT DURATION_MS BACKUP_ID ERROR: append one record now. Returns 1
# when it could not (logged with the shell's reason: full disk, read-only, missing folder).
audit_record() {
    [ -n "$AUDIT_LOG" ] || return 0
    _line=$(printf '{"time":"%s","actor":%s,"stack":%s,"operation":"%s","from":null,"to":null,"backup_id":%s,"result":"%s","duration_ms":%s,"error":%s,"reason":null,"checks":null}' \
        "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(json_string "$(audit_actor)")" "$(json_string "${AUDIT_STACK:-unknown}")" \
        "$1" "$(json_string "$4")" "$2" "$3" "$(json_string "$5")")
    if _why=$(audit_append "$AUDIT_LOG" "$_line" 2>&1 >/dev/null); then return 0; fi
    _why=$(printf '%s' "$_why" | tr '\n' ' ')
    log "audit: could not append the $1 record ($2) to $AUDIT_LOG: ${_why:-write failed}"
    return 1
}

AUDIT_GENESIS=0000000000000000000000000000000000000000000000000000000000000000

# audit_append FILE LINE: chain LINE (a JSON object) onto FILE's last line and append it, under
# an exclusive flock on FILE; prints `<line number> <sha256 of the new line>`. A subshell: the
# lock and fd 8 end with it.
audit_append() (
    umask 022
    [ ! -e "$1" ] || [ -f "$1" ] || { echo "$1 is not a regular file" >&2; exit 1; }
    for _tool in flock sha256sum tail; do
        command -v "$_tool" >/dev/null 2>&1 || { echo "no $_tool: cannot chain the record" >&2; exit 1; }
    done
    exec 8>>"$1" || exit 1
    flock -x 8 || { echo "cannot lock $1" >&2; exit 1; }
    _prev=$AUDIT_GENESIS
    if [ -s "$1" ]; then
        _last=$(tail -n 1 "$1") || exit 1
        _prev=$(printf '%s' "$_last" | sha256sum | cut -d' ' -f1)
    fi
    case "$_prev" in *[!0-9a-f]*|"") echo "cannot hash the last line of $1" >&2; exit 1 ;; esac
    [ "${#_prev}" -eq 64 ] || { echo "cannot hash the last line of $1" >&2; exit 1; }
    _new="${2%?},\"prev\":\"$_prev\"}"
    printf '%s\n' "$_new" >&8 || exit 1
    printf '%s %s\n' "$(wc -l < "$1" | tr -d ' ')" "$(printf '%s' "$_new" | sha256sum | cut -d' ' -f1)"
)

audit_end() {
    _status="$1"
    [ -n "$AUDIT_OPERATION" ] || return 0
    case "$_status" in
        0) _result=ok ;;
        2|3|75) _result=refused ;;
        *) _result=failed ;;
    esac
    [ "$_status" = 0 ] || [ -n "$AUDIT_ERROR" ] || AUDIT_ERROR="exit status $_status"
    [ "$_status" != 0 ] || AUDIT_ERROR=""
    _op="$AUDIT_OPERATION"; AUDIT_OPERATION=""
    audit_record "$_op" "$_result" "$(( ($(date -u +%s) - AUDIT_START) * 1000 ))" \
        "$AUDIT_BACKUP_ID" "$AUDIT_ERROR" && return 0
    [ "$AUDIT_FAIL_CLOSED" = 1 ] || return 0
    log "ERROR: audit: the $_op ended $_result but its record is missing from $AUDIT_LOG; it was not undone: add the record by hand (docs/security.md)"
    return 1
}

# On exit: the outcome record; fail closed, a run that succeeded without it exits AUDIT_EXIT.
audit_exit() {
    _rc="$1"
    audit_end "$_rc" || [ "$_rc" != 0 ] || exit "$AUDIT_EXIT"
}

# audit_begin OPERATION: append the intent record now (fail closed: exit AUDIT_EXIT before
# anything is done when it cannot be appended), and the outcome when the (sub)shell exits.
audit_begin() {
    AUDIT_OPERATION=""; AUDIT_BACKUP_ID=""; AUDIT_ERROR=""; AUDIT_START=$(date -u +%s)
    if ! audit_record "$1" started 0 "" ""; then
        if [ "$AUDIT_FAIL_CLOSED" = 1 ]; then
            log "ERROR: audit: $1 refused before it acted: its intent record cannot be appended to $AUDIT_LOG (AUDIT_FAIL_CLOSED=1); nothing was done"
            exit "$AUDIT_EXIT"
        fi
        log "WARNING: audit: $1 goes on without its intent record (AUDIT_FAIL_CLOSED=0)"
    fi
    AUDIT_OPERATION="$1"
    trap 'audit_exit $?' EXIT
}

# Required and optional settings (the container sets them; tests set the same).
# BACKUP_DIR is checked by require_settings after the arguments are read, so
# `--help` works without any environment.
require_settings() {
    [ -n "${BACKUP_DIR:-}" ] \
        || die "BACKUP_DIR is not set: the folder holding the backups (the backup container sets it; docs/backup.md)" 64
    [ -d "$BACKUP_DIR" ] || die "BACKUP_DIR $BACKUP_DIR is not a folder" 64
}
BACKUP_SECOND_DIR="${BACKUP_SECOND_DIR:-}"
BACKUP_METRICS_DIR="${BACKUP_METRICS_DIR:-}"
BACKUP_KEEP_COUNT="${BACKUP_KEEP_COUNT:-14}"
BACKUP_MAX_AGE_DAYS="${BACKUP_MAX_AGE_DAYS:-30}"
BACKUP_PREFIX="postgres"

# The password is read from a file into the environment of this process tree
# only (never into the container's configuration).
load_pg_password() {
    if [ -n "${PGPASSWORD_FILE:-}" ]; then
        [ -r "$PGPASSWORD_FILE" ] || die "cannot read PGPASSWORD_FILE $PGPASSWORD_FILE"
        PGPASSWORD="$(cat "$PGPASSWORD_FILE")"
        export PGPASSWORD
    fi
}

# Epoch seconds of a UTC stamp YYYYmmddTHHMMSSZ, with shell arithmetic only
# (days-from-civil), so busybox and GNU date differences do not matter.
stamp_epoch() {
    _s="$1"
    case "$_s" in
        [0-9][0-9][0-9][0-9][0-1][0-9][0-3][0-9]T[0-2][0-9][0-5][0-9][0-6][0-9]Z) ;;
        *) return 1 ;;
    esac
    _y=$(printf '%s' "$_s" | cut -c1-4)
    _m=$(printf '%s' "$_s" | cut -c5-6); _m=${_m#0}
    _d=$(printf '%s' "$_s" | cut -c7-8); _d=${_d#0}
    _H=$(printf '%s' "$_s" | cut -c10-11); _H=${_H#0}
    _M=$(printf '%s' "$_s" | cut -c12-13); _M=${_M#0}
    _S=$(printf '%s' "$_s" | cut -c14-15); _S=${_S#0}
    _y=$(( _m <= 2 ? _y - 1 : _y ))
    _era=$(( _y / 400 ))
    _yoe=$(( _y - _era * 400 ))
    _doy=$(( (153 * (_m > 2 ? _m - 3 : _m + 9) + 2) / 5 + _d - 1 ))
    _doe=$(( _yoe * 365 + _yoe / 4 - _yoe / 100 + _doy ))
    _days=$(( _era * 146097 + _doe - 719468 ))
    echo $(( _days * 86400 + _H * 3600 + _M * 60 + _S ))
}

# Backup names are KIND-YYYYmmddTHHMMSSZ.EXT; KIND/EXT default to the Postgres dump.
# name_stamp NAME [KIND] [EXT]: the stamp of a backup file name, or failure.
name_stamp() {
    _n=$(basename "$1"); _k="${2:-$BACKUP_PREFIX}"; _e="${3:-.dump}"
    case "$_n" in
        "$_k"-*T*Z"$_e") _n=${_n#"$_k"-}; echo "${_n%"$_e"}" ;;
        *) return 1 ;;
    esac
}

# list_good DIR [KIND] [EXT]: good backups in DIR, newest first, one name per line.
list_good() {
    for _f in "$1/${2:-$BACKUP_PREFIX}"-*"${3:-.dump}"; do
        [ -f "$_f" ] || continue
        _st=$(name_stamp "$_f" "${2:-}" "${3:-}") || continue
        stamp_epoch "$_st" >/dev/null || continue
        [ -f "$_f.sha256" ] || continue
        basename "$_f"
    done | sort -r
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# The verify_* functions below return 1 on the first check that fails, log why,
# and leave which check and why in VERIFY_CHECK / VERIFY_REASON (restore turns
# them into its `restore: refused` line, docs/backup.md):
#   file      not-found  the backup file does not exist
#   checksum  missing    no FILE.sha256, or an empty one
#   checksum  malformed  its first field is not 64 lowercase hex digits
#   checksum  mismatch   the file's sha256 differs from the recorded one
#   archive   toc        pg_restore cannot read the table of contents
#   archive   data       pg_restore cannot decode the whole archive
# shellcheck disable=SC2034  # read by the scripts that source this file
VERIFY_CHECK=""; VERIFY_REASON=""
# shellcheck disable=SC2034
verify_failed() { VERIFY_CHECK="$1"; VERIFY_REASON="$2"; shift 2; log "$*"; return 1; }

# Verify FILE against FILE.sha256; a missing, malformed or different checksum fails.
verify_checksum() {
    [ -f "$1" ] || { verify_failed file not-found "missing backup file $1"; return 1; }
    [ -s "$1.sha256" ] || { verify_failed checksum missing "missing checksum file $1.sha256"; return 1; }
    _want=$(cut -d' ' -f1 < "$1.sha256")
    case "$_want" in
        *[!0-9a-f]*|"") verify_failed checksum malformed "malformed checksum file $1.sha256"; return 1 ;;
    esac
    [ "${#_want}" -eq 64 ] || { verify_failed checksum malformed "malformed checksum file $1.sha256"; return 1; }
    _have=$(sha256_of "$1")
    if [ "$_want" != "$_have" ]; then
        verify_failed checksum mismatch "checksum mismatch for $1 (expected $_want, got $_have)"; return 1
    fi
}

# A dump pg_restore can read through: `--list` reads only the table of
# contents at the start, so the whole archive is also decoded to /dev/null
# (this is what catches a truncated or damaged data section).
verify_archive() {
    pg_restore --list "$1" >/dev/null 2>&1 \
        || { verify_failed archive toc "pg_restore --list failed on $1"; return 1; }
    pg_restore --file=/dev/null "$1" 2>/dev/null \
        || { verify_failed archive data "pg_restore cannot read all of $1"; return 1; }
}

sync_file() { sync "$1" 2>/dev/null || sync; }

# prune DIR KEEP [KIND] [EXT]: retention for one kind of backup in DIR. A good
# backup is removed when it is beyond the newest BACKUP_KEEP_COUNT or older
# than BACKUP_MAX_AGE_DAYS, except the newest one and KEEP (the one just
# written). Called only after a successful backup of that kind.
prune() {
    _dir="$1"; _keep="$2"; _kind="${3:-$BACKUP_PREFIX}"; _ext="${4:-.dump}"
    _now=$(date -u +%s)
    _max_age=$(( BACKUP_MAX_AGE_DAYS * 86400 ))
    _i=0
    for _name in $(list_good "$_dir" "$_kind" "$_ext"); do
        _i=$(( _i + 1 ))
        if [ "$_i" -eq 1 ] || [ "$_name" = "$_keep" ]; then
            continue
        fi
        _age=$(( _now - $(stamp_epoch "$(name_stamp "$_name" "$_kind" "$_ext")") ))
        if [ "$_i" -gt "$BACKUP_KEEP_COUNT" ] || [ "$_age" -gt "$_max_age" ]; then
            log "retention: removing $_dir/$_name (rank $_i, age ${_age}s)"
            rm -f "$_dir/$_name" "$_dir/$_name.sha256"
        fi
    done
    # A checksum whose backup is gone holds no data.
    for _f in "$_dir/$_kind"-*"$_ext".sha256; do
        [ -f "$_f" ] || continue
        [ -f "${_f%.sha256}" ] || rm -f "$_f"
    done
}

# Serialise backup and restore runs on the backups volume (flock is in
# busybox and util-linux; without it runs are not serialised). take_lock SECONDS
# waits up to SECONDS: busybox's flock has only -sxun (no -w), so it polls -n.
take_lock() {
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$BACKUP_DIR/.lock"
        _waited=0
        until flock -n 9; do
            [ "$_waited" -lt "${1:-0}" ] \
                || die "another backup or restore is running (lock $BACKUP_DIR/.lock)" 75
            sleep 1; _waited=$(( _waited + 1 ))
        done
    fi
}
