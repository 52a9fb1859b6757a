#!/usr/bin/env bash
# Nightly astroembed pipeline run, for cron (see pipelines/cron.example).
#
# Runs `astroembed run CONFIG --log-format json --on-error skip` from WORKDIR and appends its
# stdout and stderr (one JSON line per event) to LOGDIR/astroembed-YYYY-MM-DD.log.
# Settings come from the environment, with the defaults below; edit them or set them in the
# crontab line.
#
# Exit codes of `astroembed run`, and what this wrapper does with them:
#   0  ok (including "nothing new to do")            -> exit 0, silent
#   1  failure                                       -> exit 1
#   2  usage error (bad flag, bad config file)       -> exit 2
#   3  another run holds the catalog's lock          -> logged, exit 0, silent: the earlier
#      run is still going; not an error for cron
#   4  partial success: some unreadable input files  -> exit 4; the skipped files are named
#      were skipped (the rest was processed)            in the log
# For 1, 2 and 4 the wrapper also prints one line to stderr, which cron mails to MAILTO;
# everything else goes to the log only.
set -euo pipefail

# Directory to run in; relative paths in the config are resolved against the config file
# anyway, so this only matters for relative CONFIG / LOGDIR below.
WORKDIR="${WORKDIR:-/srv/astroembed}"
# The virtualenv's astroembed, by absolute path: nothing is activated.
ASTROEMBED="${ASTROEMBED:-/srv/astroembed/.venv/bin/astroembed}"
# The pipeline config (TOML).
CONFIG="${CONFIG:-/srv/astroembed/pipelines/datacentre.toml}"
# Where the dated log files go.
LOGDIR="${LOGDIR:-/srv/astroembed/logs}"

cd "$WORKDIR"
mkdir -p "$LOGDIR"
LOG="$LOGDIR/astroembed-$(date +%Y-%m-%d).log"

# The wrapper's own lines are JSON too, so the whole log stays one JSON object per line.
note() {  # note EVENT MESSAGE [EXIT]
    local msg=${2//\\/\\\\}
    msg=${msg//\"/\\\"}
    printf '{"time": "%s", "source": "astroembed-nightly.sh", "event": "%s", "message": "%s"%s}\n' \
        "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$1" "$msg" "${3:+, \"exit\": $3}" >>"$LOG"
}

note start "$ASTROEMBED run $CONFIG --log-format json --on-error skip"
status=0
"$ASTROEMBED" run "$CONFIG" --log-format json --on-error skip >>"$LOG" 2>&1 || status=$?

case "$status" in
    0) note done "ok" 0 ;;
    3) note done "another run holds the lock; nothing done" 3
       status=0 ;;
    4) note done "partial success: some inputs were skipped (see above)" 4
       echo "astroembed: partial success, some inputs skipped; see $LOG" >&2 ;;
    2) note done "usage error: check $CONFIG" 2
       echo "astroembed: usage error (exit 2) for $CONFIG; see $LOG" >&2 ;;
    *) note done "FAILED" "$status"
       echo "astroembed: run FAILED (exit $status); see $LOG" >&2 ;;
esac
exit "$status"
