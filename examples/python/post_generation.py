#!/usr/bin/env python3
"""Post one generation record to gencol, the way an LLM gateway does after a call.

A gateway sits between an app and the model providers. After it has answered an
OpenAI-compatible request it knows everything gencol needs: the request body the app
sent (with its `user`, `session_id` and `trace` fields), the provider's response, and
when the call started, produced its first token and finished. It posts that as one
generation record to gencol's `generations` receiver and moves on; gencol turns it
into spans for every configured destination.

This script simulates the upstream call (no provider key needed), then posts the
record. Standard library only, so it runs anywhere Python 3.8+ does:

    gencol run                                   # embedded default pipeline
    python3 examples/python/post_generation.py
    python3 examples/python/post_generation.py --gzip --url http://127.0.0.1:4320

Environment: GENCOL_URL (base URL or full /v1/generations URL) and GENCOL_TOKEN
(bearer token, when the receiver has `auth` set) are used when the options are not given.
"""

import argparse
import datetime
import gzip
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid

DEFAULT_URL = "http://127.0.0.1:4320"
GENERATIONS_PATH = "/v1/generations"
MAX_RETRIES = 3


def rfc3339(ts: datetime.datetime) -> str:
    """UTC with milliseconds and a Z, the form gateways usually log."""
    return ts.astimezone(datetime.timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def simulated_call(request: dict) -> tuple:
    """Stands in for the upstream provider call; returns (response, first_token_at).

    A real gateway would stream from the provider here and note the arrival of the
    first chunk; the sleeps only make the timings in the record plausible.
    """
    time.sleep(0.35)  # queueing + prompt processing before the first token
    first_token_at = now()
    time.sleep(0.45)  # the rest of the completion streams in
    content = (
        "Three line items need attention: the hotel is $39.00 per night over the "
        "tier-2 cap, the $48.00 bar tab is not reimbursable, and the client dinner "
        "has no receipt."
    )
    response = {
        # Providers name their own ids; the gateway's generation id is separate.
        "id": "chatcmpl-" + uuid.uuid4().hex[:29],
        "model": "openai/gpt-4o-2024-08-06",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 96,
            "completion_tokens": 41,
            "total_tokens": 137,
            # USD, as the gateway priced it: 96 x $2.50/M + 41 x $10/M.
            "cost": 0.00065,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }
    return response, first_token_at


def build_generation() -> dict:
    """Runs one (simulated) call and returns the generation record for it."""
    # The body exactly as the app sent it to the gateway: gencol reads `user`,
    # `session_id` and `trace` from here, and keeps any other field it does not know.
    request = {
        "model": "openai/gpt-4o",
        "messages": [
            {
                "role": "system",
                "content": "You are an expense auditor. Hotels at most $250 per night, "
                "no alcohol, receipts above $25.",
            },
            {
                "role": "user",
                "content": "Analyze this expense report: hotel 3 nights $867.00, meals "
                "$291.40 incl. $48.00 bar tab, client dinner $388.60 (no receipt).",
            },
        ],
        "temperature": 0.2,
        "max_tokens": 512,
        "user": "user_12345",
        "session_id": "session_abc",
        "trace": {
            "trace_id": "expense_analysis_001",
            "trace_name": "Expense Processing Pipeline",
            "generation_name": "Analyze Report",
            "department": "finance",
            "cost_center": "CC-1234",
        },
    }

    created_at = now()
    response, first_token_at = simulated_call(request)
    completed_at = now()

    return {
        # Unique per call. gencol derives span ids from it, so re-posting the same
        # record after a timeout updates the same spans instead of duplicating them.
        "id": "gen-%d-%s" % (int(created_at.timestamp()), uuid.uuid4().hex[:20]),
        "created_at": rfc3339(created_at),
        "completed_at": rfc3339(completed_at),
        "first_token_at": rfc3339(first_token_at),
        "provider": "OpenAI",
        "api_key_name": "prod-backend",
        "request": request,
        "response": response,
    }


def generations_url(url: str) -> str:
    """Accepts a base URL (http://host:4320) or the full /v1/generations URL."""
    url = url.rstrip("/")
    return url if url.endswith(GENERATIONS_PATH) else url + GENERATIONS_PATH


def retry_after_seconds(value, default: float = 1.0) -> float:
    """Retry-After is either delay-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from email.utils import parsedate_to_datetime

        return max(0.0, (parsedate_to_datetime(value) - now()).total_seconds())
    except (TypeError, ValueError):
        return default


def show_body(raw: bytes) -> str:
    try:
        return json.dumps(json.loads(raw), indent=2)
    except ValueError:
        return raw.decode("utf-8", "replace")


def post(url: str, record: dict, token, use_gzip: bool) -> int:
    """Posts the record, retrying on 503; returns the process exit code."""
    body = json.dumps(record).encode("utf-8")
    headers = {"Content-Type": "application/json"}
    if use_gzip:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    if token:
        headers["Authorization"] = "Bearer " + token

    for attempt in range(MAX_RETRIES + 1):
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                status, raw = resp.status, resp.read()
                retry_after = None
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
            retry_after = err.headers.get("Retry-After")
        except urllib.error.URLError as err:
            print("cannot reach %s: %s (is `gencol run` listening?)" % (url, err.reason),
                  file=sys.stderr)
            return 1

        if status == 202:
            try:
                answer = json.loads(raw)
            except ValueError:
                answer = {}
            print("accepted: %d" % answer.get("accepted", 0))
            for rejected in answer.get("rejected", []):
                print("rejected: record %s: %s" % (rejected.get("index"), rejected.get("error")))
            return 0 if not answer.get("rejected") else 1
        if status == 400:
            # Nothing was kept; the answer names the record index and field path.
            print("400 Bad Request: the record was rejected:", file=sys.stderr)
            print(show_body(raw), file=sys.stderr)
            return 1
        if status == 401:
            print("401 Unauthorized: the receiver requires a bearer token; set GENCOL_TOKEN "
                  "or pass --token", file=sys.stderr)
            return 1
        if status == 503:
            # Backpressure: gencol kept nothing of this request, so sending the very
            # same body again is safe (and the id makes it idempotent anyway).
            if attempt == MAX_RETRIES:
                print("503 Service Unavailable: still full after %d retries; giving up"
                      % MAX_RETRIES, file=sys.stderr)
                return 1
            delay = retry_after_seconds(retry_after)
            print("503 Service Unavailable: gencol is full, retrying in %.1fs (retry %d of %d)"
                  % (delay, attempt + 1, MAX_RETRIES), file=sys.stderr)
            time.sleep(delay)
            continue
        # 413 (body too large), 415 (content type) and anything else: not retryable.
        print("HTTP %d:" % status, file=sys.stderr)
        print(show_body(raw), file=sys.stderr)
        return 1
    return 1


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Post one generation record to gencol, as an LLM gateway does.",
        epilog="Exit status: 0 when every record was accepted, 1 otherwise.",
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("GENCOL_URL", DEFAULT_URL),
        help="gencol generations receiver, base URL or full %s URL "
        "(default: $GENCOL_URL or %s)" % (GENERATIONS_PATH, DEFAULT_URL),
    )
    parser.add_argument(
        "--token",
        # Prefer the environment: a token on the command line is visible in `ps`.
        default=os.environ.get("GENCOL_TOKEN"),
        help="bearer token for a receiver with `auth` set (default: $GENCOL_TOKEN)",
    )
    parser.add_argument(
        "--gzip", action="store_true", help="send the body gzip-compressed (Content-Encoding: gzip)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the record instead of posting it"
    )
    args = parser.parse_args()

    record = build_generation()
    if args.dry_run:
        print(json.dumps(record, indent=2))
        return 0
    print("posting generation %s" % record["id"])
    return post(generations_url(args.url), record, args.token, args.gzip)


if __name__ == "__main__":
    sys.exit(main())
