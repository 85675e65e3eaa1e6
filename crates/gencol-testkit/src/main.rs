//! `gencol-testkit`: run a fake destination locally to see what a gencol pipeline sends, or to
//! watch how it copes with a failing or slow backend, without any account at a real vendor.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use gencol_testkit::pretty::render_request;
use gencol_testkit::ramp::RAMP_PATH;
use gencol_testkit::{
    Answer, EventsSink, OtlpSink, PostHogOptions, PostHogSink, RaindropOptions, RaindropSink, SinkOptions,
    masked_header_value,
};

#[derive(Debug, Parser)]
#[command(name = "gencol-testkit", version, about = "Local fake destinations for trying and testing gencol pipelines")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an OTLP/HTTP traces sink that prints every request and its spans.
    Otlp(OtlpArgs),
    /// Run a Ramp-like endpoint: the OTLP sink at /developer/v1/ai-usage/openrouter,
    /// requiring `Authorization: Bearer <api key>` (401 otherwise).
    Ramp(RampArgs),
    /// Run a Raindrop-like events endpoint (POST /v1/events/track) that enforces the real
    /// ingest's rules (bearer write key, strict event keys, 1 MiB) and prints each event.
    Raindrop(RaindropArgs),
    /// Run a PostHog-like capture endpoint (POST /batch/) that checks the project API key
    /// and every $ai_generation event against PostHog's schema, and prints each event.
    Posthog(PostHogArgs),
}

#[derive(Debug, Args)]
struct OtlpArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4319")]
    listen: SocketAddr,
    /// Path to serve; others get 404.
    #[arg(long, default_value = gencol_testkit::DEFAULT_TRACES_PATH)]
    path: String,
    /// Require this header on every request, as `NAME=VALUE`; others get 401.
    #[arg(long, value_parser = parse_header)]
    expect_header: Option<(String, String)>,
    #[command(flatten)]
    misbehaviour: Misbehaviour,
}

#[derive(Debug, Args)]
struct RampArgs {
    /// Address to listen on; point the `ramp` exporter's base_url at
    /// http://ADDR/developer/v1/ai-usage/openrouter.
    #[arg(long, default_value = "127.0.0.1:4321")]
    listen: SocketAddr,
    /// The API key requests must carry as `Authorization: Bearer KEY` (default: the
    /// RAMP_API_KEY environment variable, so the key stays out of the process list).
    #[arg(long, value_name = "KEY")]
    api_key: Option<String>,
    #[command(flatten)]
    misbehaviour: Misbehaviour,
}

#[derive(Debug, Args)]
struct RaindropArgs {
    /// Address to listen on; point the `raindrop` exporter's base_url at http://ADDR.
    #[arg(long, default_value = "127.0.0.1:4322")]
    listen: SocketAddr,
    /// The write key requests must carry as `Authorization: Bearer KEY` (default: the
    /// RAINDROP_WRITE_KEY environment variable, so the key stays out of the process list).
    #[arg(long, value_name = "KEY")]
    write_key: Option<String>,
    #[command(flatten)]
    misbehaviour: Misbehaviour,
}

#[derive(Debug, Args)]
struct PostHogArgs {
    /// Address to listen on; point the `posthog` exporter's host at http://ADDR.
    #[arg(long, default_value = "127.0.0.1:4323")]
    listen: SocketAddr,
    /// The project API key bodies must carry as `api_key` (default: the POSTHOG_API_KEY
    /// environment variable, so the key stays out of the process list).
    #[arg(long, value_name = "KEY")]
    api_key: Option<String>,
    #[command(flatten)]
    misbehaviour: Misbehaviour,
}

/// How a fake destination misbehaves, the same flags for every endpoint.
#[derive(Debug, Args)]
struct Misbehaviour {
    /// Answer with this status instead of accepting (to watch retries).
    #[arg(long, value_parser = clap::value_parser!(u16).range(100..=999))]
    fail_status: Option<u16>,
    /// Fail only the first N requests, then accept (default: fail every request).
    #[arg(long, requires = "fail_status")]
    fail_count: Option<usize>,
    /// Send `Retry-After: SECONDS` with the failures.
    #[arg(long, requires = "fail_status")]
    retry_after: Option<u64>,
    /// Wait this long before every answer, e.g. `2s` or `500ms` (a slow backend).
    #[arg(long, value_parser = humantime::parse_duration)]
    delay: Option<Duration>,
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => Ok((name.trim().to_owned(), value.trim().to_owned())),
        _ => Err(format!("expected NAME=VALUE, got {s:?}")),
    }
}

impl Misbehaviour {
    /// Adds the flags to sink options: failures are scripted for `--fail-count` requests,
    /// or become the fallback when every request should fail.
    fn apply(&self, opts: SinkOptions) -> (SinkOptions, Vec<Answer>) {
        let (fallback, script) = self.answers();
        (if let Some(answer) = fallback { opts.fallback(answer) } else { opts }, script)
    }

    /// The fallback answer (if any) and the answers to script first, for any endpoint.
    fn answers(&self) -> (Option<Answer>, Vec<Answer>) {
        let normal = self.delay.map(Answer::delay);
        let failure = self.fail_status.map(|status| {
            let mut answer = Answer::status(status);
            if let Some(seconds) = self.retry_after {
                answer = answer.retry_after(seconds);
            }
            if let Some(delay) = self.delay {
                answer = answer.with_delay(delay);
            }
            answer
        });
        match (failure, self.fail_count) {
            (Some(failure), Some(count)) => (normal, vec![failure; count]),
            (Some(failure), None) => (Some(failure), Vec::new()),
            (None, _) => (normal, Vec::new()),
        }
    }

    /// One line per flag given, printed when a sink starts.
    fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(status) = self.fail_status {
            let scope =
                self.fail_count.map_or_else(|| "every request".to_owned(), |n| format!("the first {n} request(s)"));
            let retry = self.retry_after.map_or_else(String::new, |s| format!(" with Retry-After: {s}"));
            lines.push(format!("answering {status}{retry} to {scope}"));
        }
        if let Some(delay) = self.delay {
            lines.push(format!("delaying every answer by {}", humantime::format_duration(delay)));
        }
        lines
    }
}

async fn run_otlp(args: OtlpArgs) -> Result<(), String> {
    if !args.path.starts_with('/') {
        return Err(format!("--path must start with '/': {:?}", args.path));
    }
    let mut opts = SinkOptions::default().addr(args.listen).path(args.path.clone());
    let mut notes = Vec::new();
    if let Some((name, value)) = &args.expect_header {
        opts = opts.expect_header(name.clone(), value.clone());
        notes.push(format!("requiring header {name}={}", masked_header_value(name, value)));
    }
    serve("otlp", opts, &args.misbehaviour, &notes).await
}

/// The Ramp-like endpoint is the OTLP sink with Ramp's path and bearer key.
async fn run_ramp(args: RampArgs) -> Result<(), String> {
    let api_key = required_key(args.api_key, "--api-key", "RAMP_API_KEY", "API key")?;
    let opts = SinkOptions::ramp(&api_key).addr(args.listen);
    let notes = [format!("requiring Authorization: Bearer *** (the given key); others get 401 (path {RAMP_PATH})")];
    serve("ramp", opts, &args.misbehaviour, &notes).await
}

/// Runs a sink until Ctrl-C, printing every request it receives.
async fn serve(name: &str, opts: SinkOptions, misbehaviour: &Misbehaviour, notes: &[String]) -> Result<(), String> {
    let listen = opts.addr;
    let (opts, script) = misbehaviour.apply(opts);
    let sink = OtlpSink::start_with(opts).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    sink.script(script);
    let started = Instant::now();
    println!("gencol-testkit {name}: listening on {}", sink.url());
    for note in misbehaviour.describe().iter().chain(notes) {
        println!("  {note}");
    }
    println!("  press Ctrl-C to stop");

    let mut seen = 0;
    let mut accepted_spans = 0;
    loop {
        tokio::select! {
            signal = tokio::signal::ctrl_c() => {
                signal.map_err(|e| format!("cannot wait for Ctrl-C: {e}"))?;
                break;
            }
            next = sink.wait_for_request(seen, Duration::from_secs(3600)) => {
                if let Some(request) = next {
                    seen += 1;
                    if request.is_success() {
                        accepted_spans += request.span_count();
                    }
                    print!("{}", render_request(&request, seen, started));
                }
            }
        }
    }
    println!("stopped: {seen} requests, {accepted_spans} spans accepted");
    sink.shutdown();
    Ok(())
}

/// The key a fake destination requires: the flag's value, else the environment variable's
/// (which keeps it out of the process list), trimmed.
fn required_key(given: Option<String>, flag: &str, var: &str, what: &str) -> Result<String, String> {
    let key = match given {
        Some(key) => key,
        None => std::env::var(var)
            .map_err(|_| format!("give the {what} to require with {flag} KEY or the {var} variable"))?,
    };
    if key.trim().is_empty() {
        return Err(format!("the {what} to require is empty"));
    }
    Ok(key.trim().to_owned())
}

/// Runs the Raindrop-like endpoint until Ctrl-C, printing every request and its events.
async fn run_raindrop(args: RaindropArgs) -> Result<(), String> {
    let write_key = required_key(args.write_key, "--write-key", "RAINDROP_WRITE_KEY", "write key")?;
    let (fallback, script) = args.misbehaviour.answers();
    let mut opts = RaindropOptions::new(write_key).addr(args.listen);
    if let Some(answer) = fallback {
        opts = opts.fallback(answer);
    }
    let sink = RaindropSink::start_with(opts).await.map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    sink.script(script);
    println!("gencol-testkit raindrop: listening on {} (base_url for the raindrop exporter)", sink.url());
    let notes = ["requiring Authorization: Bearer *** (the given key); others get 401".to_owned()];
    follow_events(&sink, &args.misbehaviour, &notes).await
}

/// Runs the PostHog-like endpoint until Ctrl-C, printing every request and its events.
async fn run_posthog(args: PostHogArgs) -> Result<(), String> {
    let api_key = required_key(args.api_key, "--api-key", "POSTHOG_API_KEY", "project API key")?;
    let (fallback, script) = args.misbehaviour.answers();
    let mut opts = PostHogOptions::new(api_key).addr(args.listen);
    if let Some(answer) = fallback {
        opts = opts.fallback(answer);
    }
    let sink = PostHogSink::start_with(opts).await.map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    sink.script(script);
    println!("gencol-testkit posthog: listening on {} (host for the posthog exporter)", sink.url());
    let notes = [
        "requiring \"api_key\": \"***\" (the given key) in every body; others get 401".to_owned(),
        "checking every event against PostHog's $ai_generation schema; others get 400".to_owned(),
    ];
    follow_events(&sink, &args.misbehaviour, &notes).await
}

/// Prints every request an events endpoint receives, and its events, until Ctrl-C.
async fn follow_events(sink: &EventsSink, misbehaviour: &Misbehaviour, notes: &[String]) -> Result<(), String> {
    for note in misbehaviour.describe().iter().chain(notes) {
        println!("  {note}");
    }
    println!("  press Ctrl-C to stop");
    let started = Instant::now();
    let mut seen = 0;
    let mut accepted_events = 0;
    loop {
        tokio::select! {
            signal = tokio::signal::ctrl_c() => {
                signal.map_err(|e| format!("cannot wait for Ctrl-C: {e}"))?;
                break;
            }
            next = sink.wait_for_request(seen, Duration::from_secs(3600)) => {
                if let Some(request) = next {
                    seen += 1;
                    if request.is_success() {
                        accepted_events += request.event_count();
                    }
                    print!("{}", request.render(seen, started));
                }
            }
        }
    }
    println!("stopped: {seen} requests, {accepted_events} events accepted");
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Otlp(args) => run_otlp(args).await,
        Command::Ramp(args) => run_ramp(args).await,
        Command::Raindrop(args) => run_raindrop(args).await,
        Command::Posthog(args) => run_posthog(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("gencol-testkit: {message}");
            ExitCode::FAILURE
        }
    }
}
