#!/bin/sh
# A hand-written consumer: claim jobs one at a time, hand each claim line to a
# handler, and settle the claim with q-ctl: ack when the handler succeeds,
# nack (retry in 30s while the job has attempts left) when it fails.
#
#   examples/consumer.sh ./handle.sh            # stops after 60s without work
#   WAIT=0s examples/consumer.sh ./handle.sh    # drain what is ready, then stop
#
# The handler reads the claim line on stdin: {"type":"claim","id":...,
# "token":...,"job":{...,"payload":...}}. No jq needed: q-ctl reads the id and
# token from the same line. Unlike `q-run -- HANDLER`, nothing extends the
# lease: keep LEASE longer than a job takes.
set -u
[ $# -ge 1 ] || { echo "usage: $0 HANDLER [ARGS...]" >&2; exit 2; }

while :; do
    job=$(q-claim --wait="${WAIT:-60s}" --lease "${LEASE:-10m}") || { status=$?; break; }
    if printf '%s\n' "$job" | "$@"; then
        printf '%s\n' "$job" | q-ctl -q ack >/dev/null
    else
        printf '%s\n' "$job" | q-ctl -q nack --delay 30s >/dev/null
    fi || echo "consumer: could not settle a claim (lease lost?): $job" >&2
done
# q-claim exits 1 when nothing was ready (or the wait ran out): the normal end.
[ "$status" -eq 1 ] && exit 0
exit "$status"
