use std::sync::Arc;
use std::time::Instant;

use gencol_config::{ComponentId, load_str};
use gencol_engine::routing::{Sampler, Verdict};
use gencol_engine::{ComponentContext, Processor, ProcessorFactory};
use gencol_model::{Origin, SpanItem};
use opentelemetry_proto::tonic::trace::v1::Span;

use super::{SampleFactory, TraceSampler};

fn span(trace_id: [u8; 16]) -> SpanItem {
    SpanItem {
        origin: Arc::new(Origin::default()),
        span: Span { trace_id: trace_id.to_vec(), ..Default::default() },
        generation: None,
    }
}

#[test]
fn a_share_of_traces_is_kept_whole_by_the_rule_of_spec_11() {
    let mut sampler = TraceSampler::new(Sampler::new(0.25).expect("rate"));
    let ids: Vec<[u8; 16]> = (0..4000u64)
        .map(|i| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&i.to_be_bytes());
            id[8..].copy_from_slice(&(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_be_bytes());
            id
        })
        .collect();
    // Two spans a trace: both kept or both dropped.
    let mut items: Vec<SpanItem> = ids.iter().flat_map(|id| [span(*id), span(*id)]).collect();
    sampler.process(&mut items, Instant::now());
    let expected: Vec<&[u8; 16]> = ids
        .iter()
        .filter(|id| {
            let mut r = [0u8; 8];
            r[1..].copy_from_slice(&id[9..]);
            u64::from_be_bytes(r) >= (0.75 * (1u64 << 56) as f64).round() as u64
        })
        .collect();
    assert_eq!(items.len(), 2 * expected.len());
    assert!((900..1100).contains(&expected.len()), "about a quarter: {}", expected.len());
    assert_eq!(sampler.drops_as(), Some(Verdict::SampledOut));
}

#[test]
fn the_rate_is_required_and_checked() {
    let ctx = ComponentContext { id: ComponentId { kind: "sample".into(), name: None }, base_dir: ".".into() };
    for (yaml, line, message) in [
        ("sample:\n", 1, "needs `sampling_rate`"),
        ("sample:\n  sampling_rate: 0\n", 2, "between 0.0001 and 1"),
        ("sample:\n  sampling_rate: 1.5\n", 2, "between 0.0001 and 1"),
        ("sample:\n  rate: 0.5\n", 2, "unknown key `rate`"),
    ] {
        let doc = load_str("gencol.yaml", yaml, &|_| None).expect("yaml");
        let config = doc.value.get("sample").expect("sample");
        let errors = SampleFactory.configure(&ctx, config).err().expect("refused");
        assert!(errors[0].message.contains(message), "{yaml}: {}", errors[0].message);
        assert_eq!(errors[0].loc.as_ref().map(|l| l.line), Some(line), "{yaml}");
    }
}
