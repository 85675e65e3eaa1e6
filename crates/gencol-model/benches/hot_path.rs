//! Micro-benchmarks of the work gencol does for every generation: decode the record
//! (JSON, schema checks, typing), build its span, and encode a batch of 100 spans as
//! OTLP/JSON and OTLP/protobuf; plus decoding OTLP/JSON, the `otlp` receiver's part.
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
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
