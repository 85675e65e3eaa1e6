//! Uploads that stall (issue 16), in a test binary of their own: 300 of them hold half a
//! body each, and the test measures gencol's read timeouts and its memory coming back. In
//! one process with the other hostile-client cases it failed now and then (an upload reset
//! before it stalled) even when those ran one at a time; alone it never did in any run.

mod common;

use std::time::{Duration, Instant};

use common::hostile::{PATIENCE, config, post_until_accepted, raise_open_files_limit};
use common::*;
use gencol_testkit::OtlpSink;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: u64 = 1024 * 1024;

/// What gencol sends on `stream` until it closes the connection (`None` if it stayed open
/// for `PATIENCE`).
async fn read_until_closed(stream: &mut TcpStream) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 8192];
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(String::from_utf8_lossy(&got).into_owned()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// 300 uploads that send half their body and stop: each is answered 408 and closed at
/// the read timeout, gencol's memory goes back to about where it was, and a normal
/// sender is answered all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_uploads_are_closed_at_the_read_timeout_and_their_memory_comes_back() {
    const UPLOADS: usize = 300;
    const DECLARED: usize = 1024 * 1024;
    const SENT: usize = DECLARED / 2;
    raise_open_files_limit(4 * UPLOADS as u64);
    let sink = OtlpSink::start().await.expect("sink");
    let gencol = Gencol::start(&config(
        &sink.url(),
        "    read_timeout: 5s\n    read_idle_timeout: 1s\n    max_connections: 1000",
        "  limits: {max_inflight_memory: 1GiB}",
    ));
    assert_eq!(post_until_accepted(&gencol.generations_url(), "warm-up").await, 1);
    let start_rss = gencol.proc_status_kib("VmRSS").expect("VmRSS") * 1024;

    let port = gencol.generations_port;
    let uploads: Vec<_> = (0..UPLOADS)
        .map(|_| {
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
                let head = format!(
                    "POST /v1/generations HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                     content-length: {DECLARED}\r\n\r\n"
                );
                stream.write_all(head.as_bytes()).await.expect("head");
                stream.write_all(&vec![b' '; SENT]).await.expect("half the body");
                read_until_closed(&mut stream).await
            })
        })
        .collect();

    // A normal sender, answered while the uploads hold their connections and memory.
    let url = gencol.generations_url();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let normal = tokio::spawn(async move {
        let mut n = 0;
        while !*stopped.borrow() {
            // Answered on the first try: no connection of its is ever closed under it here.
            assert_eq!(post_until_accepted(&url, &format!("normal-{n}")).await, 1, "normal-{n}");
            n += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        n
    });

    for upload in uploads {
        let answer = upload.await.expect("upload task").expect("gencol closed the stalled upload");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("connection: close") && answer.contains("read_idle_timeout"), "{answer}");
    }
    let peak = gencol.proc_status_kib("VmHWM").expect("VmHWM") * 1024;

    // Their memory is given back: RSS returns to within 32 MiB of where it started (the
    // allocator keeps a little), while normal requests go on.
    let near_start = start_rss + 32 * MIB;
    let deadline = Instant::now() + PATIENCE;
    let mut rss = u64::MAX;
    while Instant::now() < deadline {
        rss = gencol.proc_status_kib("VmRSS").expect("VmRSS") * 1024;
        if rss <= near_start {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.send(true).expect("stop the sender");
    let answered = normal.await.expect("normal sender");
    eprintln!(
        "RSS {} MiB at start, peak {} MiB with {UPLOADS} stalled uploads, {} MiB after; {answered} normal requests answered",
        start_rss / MIB,
        peak / MIB,
        rss / MIB
    );
    assert!(rss <= near_start, "RSS {} MiB did not come back near {} MiB", rss / MIB, start_rss / MIB);
    assert!(answered >= 1);
}
