#!/usr/bin/env bash
# Posts generation records to gencol the three ways a gateway can: one JSON object,
# an NDJSON batch, and a gzip-compressed body (here a JSON array of two records).
#
#   gencol run &                                  # the embedded default pipeline
#   examples/curl/post-generation.sh
#
# Environment:
#   GENCOL_URL    base URL of the generations receiver (default http://127.0.0.1:4320)
#   GENCOL_TOKEN  bearer token, only when the receiver has `auth` set
#
# Prints each answer (status and body) and stops at the first one that is not 2xx.
set -euo pipefail

# Resolve the records relative to this script, so it works from any directory.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
records="$here/../generations"
url="${GENCOL_URL:-http://127.0.0.1:4320}/v1/generations"

# curl with the bearer token when GENCOL_TOKEN is set. The header is read from a
# process substitution (-H @file) rather than the command line, so the token never
# shows up in `ps` output (printf is a shell builtin and starts no process). It is
# made anew for every call because such a file can be read only once.
send() {
  if [[ -n "${GENCOL_TOKEN:-}" ]]; then
    curl -H @<(printf 'Authorization: Bearer %s\n' "$GENCOL_TOKEN") "$@"
  else
    curl "$@"
  fi
}

# post LABEL CURL_ARGS...: sends one request, prints its answer, fails on non-2xx.
post() {
  local label=$1
  shift
  local answer status
  # --data-binary (in the callers), not -d: -d strips newlines, which would glue the
  # NDJSON lines together and corrupt gzip bytes. The status code is appended on a
  # line of its own so one curl call gives both body and status.
  answer=$(send -sS -w '\n%{http_code}' "$url" "$@")
  status=${answer##*$'\n'}
  printf '== %s: HTTP %s\n%s\n\n' "$label" "$status" "${answer%$'\n'*}"
  [[ $status == 2* ]]
}

# 1. One record as a JSON object (the Ramp seed's request).
post "ramp-seed.json" \
  -H 'Content-Type: application/json' \
  --data-binary @"$records/ramp-seed.json"

# 2. Five records, one JSON object per line; the content type tells gencol to read
#    NDJSON. One record is a failed generation (error 429) and is broadcast too.
post "batch.ndjson" \
  -H 'Content-Type: application/x-ndjson' \
  --data-binary @"$records/batch.ndjson"

# 3. A JSON array of two records, gzip-compressed as a busy gateway would send it:
#    prompts and completions are text and shrink several times over.
{
  printf '['
  cat "$records/raindrop-seed.json"
  printf ','
  cat "$records/otlp-seed.json"
  printf ']'
} | gzip -c | post "raindrop-seed.json + otlp-seed.json (gzip)" \
  -H 'Content-Type: application/json' \
  -H 'Content-Encoding: gzip' \
  --data-binary @-
