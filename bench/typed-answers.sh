#!/usr/bin/env bash
# Give the shared harness's upstream answers their content types.
#
# Its nginx serves every POST through "error_page 405 =200 $uri", and by
# then try_files has rewritten $uri to the file's own name, which no
# location matches: both answers leave as text/plain. cutover reads
# application/json and text/event-stream (usage, shadow compare) and skips
# anything else, so on the harness as it is, a compared shadow compares
# nothing and counts every answer in cutover_api_skipped_total. Our benches
# run a copy of the upstream config with two locations added, so that what
# they measure is the work a real answer costs.
#
# Usage: typed-answers.sh FILE   (an upstream.nginx.conf, template or rendered; edited in place)
set -euo pipefail
file=$1
grep -q 'location = /chat-completion.json' "$file" && exit 0
sed -i 's#^\([[:space:]]*\)location = /v1/chat/completions {#\1location = /chat-completion.json { default_type application/json; }\n\1location = /chat-completion.sse { default_type text/event-stream; }\n\n&#' "$file"
grep -q 'location = /chat-completion.json' "$file" || { echo "typed-answers.sh: no chat location in $file" >&2; exit 1; }
