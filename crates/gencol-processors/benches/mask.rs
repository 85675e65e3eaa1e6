//! Micro-benchmark of the `privacy` processor's hot function: [`Masker::mask`] over a
//! prompt-sized text with every built-in rule on, when there is nothing to hide (nearly
//! every string), when there is one e-mail address, and as message JSON.
//!
//! Run with `cargo bench -p gencol-processors`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gencol_processors::{BuiltinPattern, Masker};

/// About 12 KB of prose with numbers in it (years, amounts, times, line numbers), which is
/// what keeps the digit-based rules (cards, phones, IPv4) from being ruled out cheaply.
fn prose() -> String {
    let words = [
        "the",
        "invoice",
        "latency",
        "model",
        "request",
        "backend",
        "gateway",
        "provider",
        "usage",
        "cost",
        "tokens",
        "2026",
        "$13.50",
        "user:",
        "assistant",
        "system",
        "Line 42:",
        "at 10:30",
        "reviewed",
    ];
    let mut text = String::new();
    let mut i = 0usize;
    while text.len() < 12_000 {
        text.push_str(words[i * 7 % words.len()]);
        text.push(if i.is_multiple_of(11) { '.' } else { ' ' });
        i += 1;
    }
    text
}

fn mask(c: &mut Criterion) {
    let all = [
        BuiltinPattern::CreditCard,
        BuiltinPattern::ApiKey,
        BuiltinPattern::Email,
        BuiltinPattern::Ip,
        BuiltinPattern::Phone,
    ];
    let masker = Masker::new(&all, &[]).expect("built-ins compile");
    let clean = prose();
    let with_email = format!("{} write to jane.doe@example.com {}", &clean[..6000], &clean[6000..]);
    let json = serde_json::json!([{"role": "user", "parts": [{"type": "text", "content": clean}]}]).to_string();

    let mut g = c.benchmark_group("privacy");
    g.throughput(Throughput::Bytes(clean.len() as u64));
    g.bench_function("mask/12KB_clean", |b| b.iter(|| masker.mask(black_box(&clean)).len()));
    g.bench_function("mask/12KB_one_email", |b| b.iter(|| masker.mask(black_box(&with_email)).len()));
    g.bench_function("mask/12KB_json_clean", |b| b.iter(|| masker.mask(black_box(&json)).len()));
    g.finish();
}

criterion_group!(benches, mask);
criterion_main!(benches);
