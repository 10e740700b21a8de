#!/bin/sh
# q with jq: jobs from a JSON document, and a report of what failed.
#
#   examples/jq-pipeline.sh files.json
#
# files.json is an array like [{"path":"a.log"},{"path":"b.log"}]: one gzip
# job per file, tagged so the report finds exactly this batch.
set -eu
[ $# -eq 1 ] || { echo "usage: $0 FILES.json" >&2; exit 2; }
tag="compress-$$"

# One job per element, pushed in one group commit; keep the ids.
jq -c --arg tag "$tag" '.[] | {cmd: ["gzip", "-kf", .path], name: .path, tags: [$tag], attempts: 2, backoff: "1s"}' "$1" \
    | q-push > pushed.jsonl

# Run them, 4 at a time (a supervisor or worker that already serves the queue
# does it too: then only q-wait is needed).
q-supervise -j 4 --exit-on-idle --skip-if-running || true
q-wait < pushed.jsonl > results.jsonl || true

# Report: one tab-separated line per job that did not end done.
q-ls --all --tag "$tag" \
    | jq -r 'select(.state != "done") | [.id, .name, .state, .result.reason, .result.exit_code] | @tsv'

# Exit 0 only if every job ended done.
jq -e -s 'all(.state == "done")' results.jsonl > /dev/null
