#!/bin/bash
# vmalert at the official image's path. Debian's vmalert (1.79) predates
# -notifier.blackhole, which the compose files pass to current vmalert: it
# becomes a notifier nobody listens on (the alerts are evaluated, as with
# the blackhole, and their sending fails in the log).
args=()
for a in "$@"; do
  case $a in
    -notifier.blackhole | -notifier.blackhole=true | --notifier.blackhole) args+=(-notifier.url=http://127.0.0.1:9/) ;;
    *) args+=("$a") ;;
  esac
done
exec /usr/bin/vmalert "${args[@]}"
