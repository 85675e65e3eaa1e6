//! `gencol-testkit`: run a fake destination locally to see what a gencol pipeline sends, or to
//! watch how it copes with a failing or slow backend, without any account at a real vendor.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use gencol_testkit::pretty::render_request;
use gencol_testkit::{Answer, OtlpSink, SinkOptions, masked_header_value};

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
}

#[derive(Debug, Args)]
struct OtlpArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4319")]
    listen: SocketAddr,
    /// Path to serve; others get 404.
    #[arg(long, default_value = gencol_testkit::DEFAULT_TRACES_PATH)]
    path: String,
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
    /// Require this header on every request, as `NAME=VALUE`; others get 401.
    #[arg(long, value_parser = parse_header)]
    expect_header: Option<(String, String)>,
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => Ok((name.trim().to_owned(), value.trim().to_owned())),
        _ => Err(format!("expected NAME=VALUE, got {s:?}")),
    }
}

impl OtlpArgs {
    /// Turns the flags into sink options: failures are scripted for `--fail-count` requests,
    /// or become the fallback when every request should fail.
    fn options(&self) -> (SinkOptions, Vec<Answer>) {
        let mut opts = SinkOptions::default().addr(self.listen).path(self.path.clone());
        if let Some((name, value)) = &self.expect_header {
            opts = opts.expect_header(name.clone(), value.clone());
        }
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
            (Some(failure), Some(count)) => {
                if let Some(normal) = normal {
                    opts = opts.fallback(normal);
                }
                (opts, vec![failure; count])
            }
            (Some(failure), None) => (opts.fallback(failure), Vec::new()),
            (None, _) => {
                if let Some(normal) = normal {
                    opts = opts.fallback(normal);
                }
                (opts, Vec::new())
            }
        }
    }
}

async fn run_otlp(args: OtlpArgs) -> Result<(), String> {
    if !args.path.starts_with('/') {
        return Err(format!("--path must start with '/': {:?}", args.path));
    }
    let (opts, script) = args.options();
    let sink = OtlpSink::start_with(opts).await.map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    sink.script(script);
    let started = Instant::now();
    println!("gencol-testkit otlp: listening on {}", sink.url());
    if let Some(status) = args.fail_status {
        let scope = args.fail_count.map_or_else(|| "every request".to_owned(), |n| format!("the first {n} request(s)"));
        let retry = args.retry_after.map_or_else(String::new, |s| format!(" with Retry-After: {s}"));
        println!("  answering {status}{retry} to {scope}");
    }
    if let Some(delay) = args.delay {
        println!("  delaying every answer by {}", humantime::format_duration(delay));
    }
    if let Some((name, value)) = &args.expect_header {
        println!("  requiring header {name}={}", masked_header_value(name, value));
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

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Otlp(args) => run_otlp(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("gencol-testkit: {message}");
            ExitCode::FAILURE
        }
    }
}
