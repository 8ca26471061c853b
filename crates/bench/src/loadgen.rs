//! An HTTP/1.1 load generator: `concurrency` keep-alive connections, each sending one request at a
//! time, every request signed afresh with its own delivery id.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::stats::RunStats;

/// Builds request `n` of worker `w`: path, headers, body.
pub type MakeRequest = dyn Fn(usize, u64) -> (String, Vec<(String, String)>, Bytes) + Send + Sync;

/// Runs the load for `duration` and returns what was measured.
pub async fn run(
    addr: SocketAddr,
    concurrency: usize,
    duration: Duration,
    make: Arc<MakeRequest>,
) -> anyhow::Result<RunStats> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let make = make.clone();
        workers.spawn(async move { connection(addr, worker, deadline, &*make).await });
    }
    let mut stats = RunStats::default();
    while let Some(result) = workers.join_next().await {
        stats.merge(result??);
    }
    stats.elapsed = started.elapsed();
    Ok(stats)
}

async fn connection(
    addr: SocketAddr,
    worker: usize,
    deadline: Instant,
    make: &MakeRequest,
) -> anyhow::Result<RunStats> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut stats = RunStats::default();
    let mut n = 0u64;
    while Instant::now() < deadline {
        let (path, headers, body) = make(worker, n);
        n += 1;
        let mut request = http::Request::post(path).header(http::header::HOST, addr.to_string());
        for (name, value) in &headers {
            request = request.header(name, value);
        }
        let request = request
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))?;
        sender.ready().await?;
        let sent = Instant::now();
        let response = sender.send_request(request).await?;
        let status = response.status();
        response.into_body().collect().await?;
        let latency = sent.elapsed();
        if status.is_success() {
            stats.ok += 1;
            stats
                .latencies_us
                .push(latency.as_micros().min(u128::from(u32::MAX)) as u32);
        } else {
            stats.errors += 1;
        }
    }
    Ok(stats)
}
