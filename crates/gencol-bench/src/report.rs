//! From runs to what a reader needs: medians per point, the ratios the issue asks for
//! (gencol / null, gencol / rotel), the four targets checked, `BENCHMARKS.md`,
//! `runs.json` with every run, and a plot of throughput and latency.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::scenario::{RunRecord, SCENARIOS};

/// Everything about the run that is not a measurement.
#[derive(Clone, Debug, Serialize)]
pub struct RunInfo {
    pub date: String,
    pub commit: String,
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    pub load_before: String,
    pub target_core: usize,
    pub generator_core: usize,
    pub warmup_s: f64,
    pub measure_s: f64,
    pub repeats: usize,
    pub closed_connections: usize,
    pub open_connections: usize,
    /// `rotel-agent --version`, or why rotel could not be measured.
    pub rotel: Result<String, String>,
    pub command: String,
}

/// The medians of one point over its repeats.
#[derive(Clone, Debug, Serialize)]
pub struct Median {
    pub scenario: &'static str,
    pub target: &'static str,
    pub batch: usize,
    pub offered_per_s: Option<f64>,
    pub runs: usize,
    pub mean_body_bytes: usize,
    pub requests_per_s: f64,
    pub records_per_s: f64,
    pub spans_per_s: Option<f64>,
    pub cpu_us_per_record: f64,
    pub core_busy: f64,
    pub generator_busy: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub peak_rss_mib: Option<f64>,
    pub refused: u64,
    pub late: u64,
    pub errors: u64,
    /// Spans delivered over records accepted, whole runs (below 1.0: something was lost
    /// or still held, such as `hierarchy` root spans inside their group window).
    pub delivered_ratio: f64,
    /// Bytes sent to storage per accepted record (disk queue runs).
    pub disk_bytes_per_record: Option<f64>,
}

type Key = (&'static str, &'static str, usize, Option<u64>);

fn key(r: &RunRecord) -> Key {
    (r.scenario, r.target, r.batch, r.offered_per_s.map(|o| o as u64))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// Medians per point, in the order the points were first run.
pub fn medians(runs: &[RunRecord]) -> Vec<Median> {
    let mut order: Vec<Key> = Vec::new();
    let mut groups: BTreeMap<Key, Vec<&RunRecord>> = BTreeMap::new();
    for r in runs {
        let k = key(r);
        if !groups.contains_key(&k) {
            order.push(k);
        }
        groups.entry(k).or_default().push(r);
    }
    order
        .into_iter()
        .map(|k| {
            let rs = &groups[&k];
            let m = |f: &dyn Fn(&RunRecord) -> f64| median(rs.iter().map(|r| f(r)).collect());
            let first = rs[0];
            Median {
                scenario: first.scenario,
                target: first.target,
                batch: first.batch,
                offered_per_s: first.offered_per_s,
                runs: rs.len(),
                mean_body_bytes: first.mean_body_bytes,
                requests_per_s: m(&|r| r.requests_per_s),
                records_per_s: m(&|r| r.records_per_s),
                spans_per_s: first.spans_per_s.map(|_| m(&|r| r.spans_per_s.unwrap_or(f64::NAN))),
                cpu_us_per_record: m(&|r| r.cpu_us_per_record),
                core_busy: m(&|r| r.core_busy),
                generator_busy: m(&|r| r.generator_busy),
                p50_ms: m(&|r| r.p50_ms),
                p99_ms: m(&|r| r.p99_ms),
                p999_ms: m(&|r| r.p999_ms),
                peak_rss_mib: first.peak_rss_mib.map(|_| m(&|r| r.peak_rss_mib.unwrap_or(f64::NAN))),
                refused: rs.iter().map(|r| r.refused).sum(),
                late: rs.iter().map(|r| r.late).sum(),
                errors: rs.iter().map(|r| r.errors).sum(),
                delivered_ratio: m(&|r| r.spans_delivered_total as f64 / r.records_accepted_total.max(1) as f64),
                disk_bytes_per_record: first
                    .disk_bytes_per_record
                    .map(|_| m(&|r| r.disk_bytes_per_record.unwrap_or(f64::NAN))),
            }
        })
        .collect()
}

fn find<'a>(ms: &'a [Median], scenario: &str, target: &str, batch: usize, offered: Option<f64>) -> Option<&'a Median> {
    ms.iter().find(|m| m.scenario == scenario && m.target == target && m.batch == batch && m.offered_per_s == offered)
}

/// One of the targets, checked.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub target: String,
    pub figure: String,
    /// `None` when it could not be measured.
    pub holds: Option<bool>,
}

/// The four targets of the issue, from the medians of this one run.
pub fn verdicts(ms: &[Median]) -> Vec<Verdict> {
    let mut out = Vec::new();
    // (B) per-core throughput against rotel, at every batch size.
    for batch in [1, 10, 100] {
        let g = find(ms, "B", "gencol", batch, None);
        let r = find(ms, "B", "rotel", batch, None);
        out.push(match (g, r) {
            (Some(g), Some(r)) => Verdict {
                target: format!("B, batch {batch}: gencol CPU µs/span ≤ 2/3 of rotel's (≥ 1.5× its spans/s per core)"),
                figure: format!(
                    "gencol {:.1} µs/span, rotel {:.1} µs/span: {:.2}× rotel's spans per core-second (raw spans/s {:.0} vs {:.0})",
                    g.cpu_us_per_record,
                    r.cpu_us_per_record,
                    r.cpu_us_per_record / g.cpu_us_per_record,
                    g.spans_per_s.unwrap_or(f64::NAN),
                    r.spans_per_s.unwrap_or(f64::NAN),
                ),
                holds: Some(g.cpu_us_per_record <= r.cpu_us_per_record * 2.0 / 3.0),
            },
            _ => Verdict {
                target: format!("B, batch {batch}: gencol ≥ 1.5× rotel's spans per core"),
                figure: "not measured (rotel unavailable or the point failed)".into(),
                holds: None,
            },
        });
    }
    // (A) requests/s at batch 1 against the null server.
    let g = find(ms, "A", "gencol", 1, None);
    let n = find(ms, "A", "null", 1, None);
    out.push(match (g, n) {
        (Some(g), Some(n)) => Verdict {
            target: "A, batch 1: gencol requests/s ≥ 50% of the null server's".into(),
            figure: format!(
                "{:.0} vs {:.0} req/s = {:.0}% (by CPU per request: {:.1} vs {:.1} µs = {:.0}% of the null server's capacity; generator core {:.0}% busy on null)",
                g.requests_per_s,
                n.requests_per_s,
                100.0 * g.requests_per_s / n.requests_per_s,
                g.cpu_us_per_record,
                n.cpu_us_per_record,
                100.0 * n.cpu_us_per_record / g.cpu_us_per_record,
                100.0 * n.generator_busy,
            ),
            holds: Some(g.requests_per_s >= 0.5 * n.requests_per_s),
        },
        _ => Verdict { target: "A, batch 1 vs null".into(), figure: "not measured".into(), holds: None },
    });
    // (C) latency at 5k generations/s.
    out.push(match find(ms, "C", "gencol", 1, Some(5000.0)) {
        Some(g) => Verdict {
            target: "C: p99 receiver latency ≤ 2 ms at 5k generations/s".into(),
            figure: format!(
                "p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms at {:.0} req/s achieved, {} late",
                g.p50_ms, g.p99_ms, g.p999_ms, g.requests_per_s, g.late
            ),
            holds: Some(g.p99_ms <= 2.0 && g.requests_per_s >= 0.97 * 5000.0 && g.late == 0),
        },
        None => Verdict { target: "C: p99 at 5k/s".into(), figure: "not measured".into(), holds: None },
    });
    // The disk queue against the memory queue, in this run.
    const DISK: &str = "gencol (disk queue)";
    for (batch, share) in [(1, 0.60), (10, 0.85)] {
        let (d, m) = (find(ms, "A", DISK, batch, None), find(ms, "A", "gencol", batch, None));
        out.push(match (d, m) {
            (Some(d), Some(m)) => Verdict {
                target: format!(
                    "A, batch {batch}: disk queue generations/s ≥ {:.0}% of the memory queue's",
                    share * 100.0
                ),
                figure: format!(
                    "{:.0} vs {:.0} generations/s = {:.0}%; {:.0} bytes written to disk a generation",
                    d.records_per_s,
                    m.records_per_s,
                    100.0 * d.records_per_s / m.records_per_s,
                    d.disk_bytes_per_record.unwrap_or(f64::NAN),
                ),
                holds: Some(d.records_per_s >= share * m.records_per_s),
            },
            _ => Verdict {
                target: format!("A, batch {batch}: disk vs memory queue"),
                figure: "not measured".into(),
                holds: None,
            },
        });
    }
    out.push(match find(ms, "C", DISK, 1, Some(2500.0)) {
        Some(d) => Verdict {
            target: "C: disk queue (sync: always) p99 ≤ 5 ms at 2,500 generations/s".into(),
            figure: format!(
                "p50 {:.2} ms, p99 {:.2} ms at {:.0} req/s achieved, {} late; memory queue p99 {:.2} ms",
                d.p50_ms,
                d.p99_ms,
                d.requests_per_s,
                d.late,
                find(ms, "C", "gencol", 1, Some(2500.0)).map_or(f64::NAN, |m| m.p99_ms),
            ),
            holds: Some(d.p99_ms <= 5.0 && d.requests_per_s >= 0.97 * 2500.0 && d.late == 0),
        },
        None => Verdict { target: "C: disk queue p99 at 2,500/s".into(), figure: "not measured".into(), holds: None },
    });
    // Peak RSS at 10k generations/s.
    out.push(match find(ms, "C", "gencol", 1, Some(10000.0)) {
        Some(g) => Verdict {
            target: "peak RSS ≤ 64 MiB at 10k generations/s with 2 KB content".into(),
            figure: format!(
                "{:.1} MiB (median of peaks) at {:.0} req/s achieved",
                g.peak_rss_mib.unwrap_or(f64::NAN),
                g.requests_per_s
            ),
            holds: g.peak_rss_mib.map(|r| r <= 64.0 && g.requests_per_s >= 0.97 * 10000.0),
        },
        None => Verdict { target: "peak RSS at 10k/s".into(), figure: "not measured".into(), holds: None },
    });
    out
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.digits$}"),
        _ => "–".into(),
    }
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 { format!("{:.2}", a / b) } else { "–".into() }
}

/// `BENCHMARKS.md`.
pub fn markdown(info: &RunInfo, ms: &[Median], verdicts: &[Verdict], failures: &[String]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# gencol benchmarks\n");
    let _ = writeln!(
        s,
        "Written by `{}` on {} (commit {}). {} ({} cores), Linux {}; load average before the run: {}.\n",
        info.command, info.date, info.commit, info.cpu, info.cores, info.kernel, info.load_before
    );
    let _ = writeln!(
        s,
        "The process under test runs alone on core {} (`taskset`); the load generator and the sink share core {}. \
         Every point ran {} times ({:.0} s warm-up, {:.0} s measured, a fresh process each time); figures are medians, \
         and ratios are taken between medians of this one run. Closed loop uses {} keep-alive connections, open loop {}.\n",
        info.target_core,
        info.generator_core,
        info.repeats,
        info.warmup_s,
        info.measure_s,
        info.closed_connections,
        info.open_connections
    );
    match &info.rotel {
        Ok(v) => {
            let _ = writeln!(s, "Peer: {v} (from PyPI `rotel`), run with its defaults.\n");
        }
        Err(e) => {
            let _ = writeln!(s, "**rotel could not be measured:** {e}. Everything else was.\n");
        }
    }

    let _ = writeln!(s, "## Targets\n\n| target | this run | holds |\n|---|---|---|");
    for v in verdicts {
        let holds = match v.holds {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not measured",
        };
        let _ = writeln!(s, "| {} | {} | {holds} |", v.target, v.figure);
    }
    let _ = writeln!(s);

    for (id, title) in SCENARIOS {
        let rows: Vec<&Median> = ms.iter().filter(|m| m.scenario == id).collect();
        if rows.is_empty() {
            continue;
        }
        let records = if id == "B" { "spans" } else { "generations" };
        let _ = writeln!(s, "## {id}. {title}\n");
        let _ = writeln!(
            s,
            "| target | batch | offered/s | req/s | {records}/s | spans/s at sink | CPU µs per {} | core busy | generator busy | p50 ms | p99 ms | p99.9 ms | late | peak RSS MiB | delivered | gencol / null | gencol / rotel |",
            &records[..records.len() - 1]
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for m in &rows {
            let is_gencol = m.target.starts_with("gencol");
            let vs = |other: &str| {
                if !is_gencol {
                    return "".to_owned();
                }
                match find(ms, m.scenario, other, m.batch, m.offered_per_s) {
                    // Closed loop: throughput; open loop: the load is fixed, so CPU per record.
                    Some(o) if m.offered_per_s.is_none() => ratio(m.records_per_s, o.records_per_s),
                    Some(o) => format!("{} CPU", ratio(m.cpu_us_per_record, o.cpu_us_per_record)),
                    None => "–".into(),
                }
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.0} | {:.0} | {} | {:.1} | {:.0}% | {:.0}% | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {} |",
                m.target,
                m.batch,
                fmt_opt(m.offered_per_s, 0),
                m.requests_per_s,
                m.records_per_s,
                fmt_opt(m.spans_per_s, 0),
                m.cpu_us_per_record,
                100.0 * m.core_busy,
                100.0 * m.generator_busy,
                m.p50_ms,
                m.p99_ms,
                m.p999_ms,
                m.late,
                fmt_opt(m.peak_rss_mib, 1),
                if m.target == "null" { "".to_owned() } else { format!("{:.2}", m.delivered_ratio) },
                vs("null"),
                vs("rotel"),
            );
        }
        let _ = writeln!(s);
    }

    if !failures.is_empty() {
        let _ = writeln!(s, "## Runs that failed\n");
        for f in failures {
            let _ = writeln!(s, "- {f}");
        }
        let _ = writeln!(s);
    }

    let _ = writeln!(
        s,
        "## How to read this\n\n\
         - **Bodies** are realistic and differ from request to request: generation records with 1–2 KB of prompt and \
         completion text, the usual request and usage fields and custom trace metadata (about 3 KB each); OTLP/JSON spans \
         with the GenAI attributes and structured messages (about 2.6 KB each). Ids are fresh in every request, four \
         generations per trace.\n\
         - **req/s**, **generations/s**, **spans/s**: 2xx answers (and the records in them) that arrived in the measured window, per second; \
         a target that pushes back answers 503, which is not counted. **spans/s at sink**: spans the sink decoded from what \
         arrived in the window (gzip, OTLP/JSON or protobuf).\n\
         - **CPU µs per record**: user + system CPU of the process under test (all threads, `/proc/PID/stat`) over the window, \
         divided by the records it accepted. It is the per-core cost: 10⁶ / it is what one core can do. **core busy** near 100% \
         means the target was the bottleneck; **generator busy** near 100% means the generator was, and the target's req/s \
         understates it (compare CPU per record instead).\n\
         - **Latency**: from the moment a request was released (open loop: by the pacer, at the offered rate; closed loop: \
         when sent) to the full answer, so a queue in front of a busy target is counted. An open-loop target that \
         falls behind does not get to serve its backlog after the window: requests still unanswered 2 s after it are \
         **late**, and count in the percentiles with the time they had waited, a lower bound.\n\
         - **delivered**: spans that reached the sink over records accepted, whole run; in A, C and D it is above 1 by the \
         `hierarchy` root spans sent so far (one per trace, after the 5 s group window), and below 1 when the run ended \
         with roots still in their window.\n\
         - **peak RSS**: the largest resident set (`VmHWM`) of the process under test over the whole run. A closed loop keeps \
         gencol saturated, so every buffer fills up to its bound: each pipeline's 8 MiB of received bodies in flight and, \
         when the exporter falls behind, its queue (`queue.max_bytes`, 64 MiB of encoded spans by default); with batches of \
         100 that is what the RSS shows, not a leak. At offered loads gencol keeps up with (C), the buffers stay nearly empty.\n\
         - gencol runs with its defaults, except that exporter queues block when full (`queue.when_full: block`), so nothing \
         accepted is dropped and an overloaded gencol answers 503 (after waiting up to 500 ms for room). rotel receives OTLP/JSON and exports OTLP/protobuf with \
         gzip, batched by its defaults (up to 8192 spans or 200 ms); in B, the `gencol` row exports protobuf with gzip too \
         (the same work); `gencol (JSON out)` exports OTLP/JSON with gzip, gencol's default. The null server reads every \
         body and discards it, on the same hyper/tokio setup.\n\
         - Every run is in `bench-results/runs.json`; the plot is `bench-results/throughput-latency.svg`."
    );
    s
}

/// The plot: records/s per core by batch size (A, B), and latency by offered load (C).
pub fn plot(ms: &[Median], path: &Path) -> Result<(), String> {
    let root = SVGBackend::new(path, (1200, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (left, right) = root.split_horizontally(600);

    let series = |scenario: &str, target: &str| -> Vec<(f64, f64)> {
        ms.iter()
            .filter(|m| m.scenario == scenario && m.target == target && m.records_per_s > 0.0)
            .map(|m| (m.batch as f64, m.records_per_s))
            .collect()
    };
    let lines = [
        ("A gencol (generations/s)", series("A", "gencol"), RED),
        ("A null (generations/s)", series("A", "null"), RGBColor(240, 160, 160)),
        ("B gencol (spans/s)", series("B", "gencol"), BLUE),
        ("B rotel (spans/s)", series("B", "rotel"), GREEN),
        ("B null (spans/s)", series("B", "null"), RGBColor(150, 150, 240)),
    ];
    let max = lines.iter().flat_map(|(_, s, _)| s.iter().map(|p| p.1)).fold(10.0, f64::max);
    let mut chart = ChartBuilder::on(&left)
        .caption("Throughput on one core (closed loop)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d((1.0f64..100.0).log_scale(), (10.0f64..max * 2.0).log_scale())
        .map_err(|e| e.to_string())?;
    chart.configure_mesh().x_desc("records per request").y_desc("records/s").draw().map_err(|e| e.to_string())?;
    for (name, points, color) in lines {
        if points.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
        chart.draw_series(points.into_iter().map(|p| Circle::new(p, 3, color.filled()))).map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;

    let latency = |target: &str, pick: fn(&Median) -> f64| -> Vec<(f64, f64)> {
        ms.iter()
            .filter(|m| m.scenario == "C" && m.target == target)
            .filter_map(|m| Some((m.offered_per_s?, pick(m))))
            .filter(|p| p.1.is_finite() && p.1 > 0.0)
            .collect()
    };
    let lat_lines = [
        ("gencol p99", latency("gencol", |m| m.p99_ms), RED, 2),
        ("gencol p50", latency("gencol", |m| m.p50_ms), RED, 1),
        ("null p99", latency("null", |m| m.p99_ms), BLUE, 2),
        ("null p50", latency("null", |m| m.p50_ms), BLUE, 1),
    ];
    let max_ms = lat_lines.iter().flat_map(|(_, s, _, _)| s.iter().map(|p| p.1)).fold(2.0, f64::max);
    let min_ms = lat_lines.iter().flat_map(|(_, s, _, _)| s.iter().map(|p| p.1)).fold(1.0, f64::min);
    let max_rate = lat_lines.iter().flat_map(|(_, s, _, _)| s.iter().map(|p| p.0)).fold(1000.0, f64::max);
    let mut chart = ChartBuilder::on(&right)
        .caption("Receiver latency at fixed load (C, batch 1)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d((500.0f64..max_rate * 1.5).log_scale(), (min_ms * 0.5..max_ms * 2.0).log_scale())
        .map_err(|e| e.to_string())?;
    chart.configure_mesh().x_desc("offered generations/s").y_desc("ms").draw().map_err(|e| e.to_string())?;
    for (name, points, color, width) in lat_lines {
        if points.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(width)))
            .map_err(|e| e.to_string())?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(width)));
        chart.draw_series(points.into_iter().map(|p| Circle::new(p, 3, color.filled()))).map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_missing() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![f64::NAN, 5.0]), 5.0);
        assert!(median(vec![]).is_nan());
    }
}
