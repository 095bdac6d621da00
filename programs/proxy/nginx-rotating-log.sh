#!/bin/sh
# The proxy's command when the IDS reads its access-log file (stack/proxy.py,
# `proxy_command`), run by `sh -c` as nginx's user: nginx in the foreground and, beside it,
# every 30 s, the access-log file's bounded rotation. Once the file is larger than the limit it
# becomes `<file>.1` and nginx reopens its logs (`-s reopen`, same uid): at most two files on
# the size-limited volume, so the log never fills it (a full log would blind the IDS).
# fail2ban follows the rename.
#
# Arguments: $1 the access-log file (ACCESS_LOG_FILE), $2 the size limit in bytes
# (security.ids.accessLogMaxMb), $3 nginx's configuration file (CONF_PATH).
log=$1 limit=$2 conf=$3
while sleep 30; do
  size=$(wc -c < "$log" 2>/dev/null || echo 0)
  if [ "$size" -gt "$limit" ]; then mv -f "$log" "$log.1" && nginx -e stderr -c "$conf" -s reopen; fi
done &
exec nginx -e stderr -c "$conf" -g "daemon off;"
