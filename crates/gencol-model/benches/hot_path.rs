//! Micro-benchmarks of the work gencol does for every generation: decode the record
//! (JSON, schema checks, typing), build its span, and encode a batch of 100 spans as
//! OTLP/JSON and OTLP/protobuf, and gzip that JSON as the exporters do (fastest level);
//! plus decoding OTLP/JSON, the `otlp` receiver's part.
//! `gencol-bench` measures the whole binary; these say which function moved.
//!
//! Run with `cargo bench -p gencol-model`. Records are the README's example (1.4 KB of
//! prompt and completion text), each with its own id and a changed sentence, so no
//! two are alike.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gencol_model::otlp::{decode_json, encode_json, encode_proto, to_request};
use gencol_model::{Origin, decode_body, generation_span, scope, service_resource};
use serde_json::Value;

const EXAMPLE: &str = include_str!("../../../examples/generations/ramp-seed.json");

/// `n` distinct records as one JSON array body.
fn body(n: usize) -> Vec<u8> {
    let example: Value = serde_json::from_str(EXAMPLE).expect("the example is JSON");
    let records: Vec<Value> = (0..n)
        .map(|i| {
            let mut r = example.clone();
            r["id"] = format!("gen-bench-{i:06}").into();
            let user = &mut r["request"]["messages"][1]["content"];
            *user = format!(
                "{} Line {i}: taxi to the airport, ${}.{:02}.",
                user.as_str().unwrap_or(""),
                20 + i % 50,
                i % 100
            )
            .into();
            r
        })
        .collect();
    serde_json::to_vec(&records).expect("values serialise")
}

/// About 1 KB of prose that differs from record to record word by word (a fixed
/// pseudo-random walk over a word list), so gzip sees text as varied as real prompts,
/// not the same record a hundred times.
fn varied_text(i: usize) -> String {
    const WORDS: [&str; 32] = [
        "invoice",
        "hotel",
        "the",
        "quarterly",
        "report",
        "flagged",
        "three",
        "meals",
        "over",
        "policy",
        "limit",
        "and",
        "a",
        "missing",
        "receipt",
        "for",
        "Berlin",
        "taxi",
        "approve",
        "reject",
        "summarise",
        "vendor",
        "total",
        "tax",
        "currency",
        "EUR",
        "conference",
        "travel",
        "team",
        "dinner",
        "client",
        "review",
    ];
    let mut state = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut text = String::with_capacity(1100);
    while text.len() < 1000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        text.push_str(WORDS[(state % 32) as usize]);
        text.push(if state.is_multiple_of(11) { '.' } else { ' ' });
        if state.is_multiple_of(7) {
            text.push_str(&format!("{} ", state % 10_000));
        }
    }
    text
}

fn origin() -> Arc<Origin> {
    Arc::new(Origin { resource: service_resource("gencol"), scope: scope(), ..Default::default() })
}

fn hot_path(c: &mut Criterion) {
    let one = body(1);
    let hundred = body(100);
    let origin = origin();
    let generations = decode_body(&hundred, false).expect("decodes").generations;
    let items: Vec<_> = generations.iter().map(|g| generation_span(g, &origin)).collect();
    let request = to_request(&items);
    let json = encode_json(&request);

    let mut g = c.benchmark_group("generation");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_body/1", |b| b.iter(|| decode_body(black_box(&one), false)));
    g.throughput(Throughput::Elements(100));
    g.bench_function("decode_body/100", |b| b.iter(|| decode_body(black_box(&hundred), false)));
    g.bench_function("generation_span/100", |b| {
        b.iter(|| generations.iter().map(|g| generation_span(black_box(g), &origin)).collect::<Vec<_>>())
    });
    g.finish();

    let mut g = c.benchmark_group("otlp");
    g.throughput(Throughput::Elements(100));
    g.bench_function("to_request/100", |b| b.iter(|| to_request(black_box(&items))));
    g.bench_function("encode_json/100", |b| b.iter(|| encode_json(black_box(&request))));
    g.bench_function("encode_proto/100", |b| b.iter(|| encode_proto(black_box(&request))));
    g.bench_function("decode_json/100", |b| b.iter(|| decode_json(black_box(&json))));
    g.finish();

    // The exporters' settings: level 1, a 32 KiB window, one compressor reset per body.
    // Throughput in bytes of OTLP/JSON, the rate that bounds an exporter's core. The
    // records get varied text first: a hundred copies of one example compress too well.
    let mut varied: Vec<Value> = serde_json::from_slice(&hundred).expect("the body is JSON");
    for (i, r) in varied.iter_mut().enumerate() {
        r["request"]["messages"][1]["content"] = varied_text(i).into();
        r["response"]["choices"][0]["message"]["content"] = varied_text(i + 1000).into();
    }
    let varied = serde_json::to_vec(&varied).expect("values serialise");
    let generations = decode_body(&varied, false).expect("decodes").generations;
    let items: Vec<_> = generations.iter().map(|g| generation_span(g, &origin)).collect();
    let json = encode_json(&to_request(&items));
    let mut g = c.benchmark_group("gzip");
    g.throughput(Throughput::Bytes(json.len() as u64));
    let mut gz = flate2::Compress::new_gzip(flate2::Compression::fast(), 15);
    g.bench_function("otlp_json/100", |b| {
        b.iter(|| {
            gz.reset();
            let mut out = Vec::with_capacity(json.len());
            let _ = gz.compress_vec(black_box(&json), &mut out, flate2::FlushCompress::Finish);
            out
        })
    });
    g.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
