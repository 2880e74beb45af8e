//! Load generator for the tracker benchmark (`bench/tracker.sh` runs it; see
//! `BENCHMARKS.md`, section "Tracker").
//!
//! Against a tracker started separately (a release binary, so its memory can
//! be read from `/proc/<pid>/status`), it:
//!
//! 1. registers `--peers` peers with `--files-per-peer` files each, from many
//!    loopback source addresses (127.0.0.2, 127.0.0.3, …), with random
//!    realistic names and hashes; a fifth of the files are drawn from a pool
//!    of popular contents, so those contents have several holders;
//! 2. (a) runs `GET /livez` (a route that touches nothing) and heartbeats
//!    (each request a different registered peer, with its token) for the same
//!    duration at the same concurrency, alternating, and reports req/s of each
//!    and their ratio;
//! 3. (b) measures p50/p99 latency, one request at a time, of content and
//!    peer listings (first pages, deep pages via cursor), name searches with
//!    a common and a rare substring, and one content by hash;
//! 4. (c) times the registration of one peer with 10,000 files, several runs;
//! 5. (d) reads the tracker's resident memory before and after loading.
//!
//! It only talks to loopback addresses and prints the figures as Markdown.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sbcftp_api::{
    ContentHash, FileEntry, FileName, PeerId, PeerList, RegisterRequest, RegisterResponse,
};

/// Tracker load generator: registers many peers, then measures heartbeats,
/// listings, a large registration and memory.
#[derive(Debug, Parser)]
struct Args {
    /// Base URL of the tracker (a loopback address).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    tracker: String,
    /// Process id of the tracker, to read its memory (VmRSS) from /proc.
    #[arg(long)]
    tracker_pid: Option<u32>,
    /// Peers to register.
    #[arg(long, default_value_t = 10_000)]
    peers: usize,
    /// Files per registered peer.
    #[arg(long, default_value_t = 100)]
    files_per_peer: usize,
    /// Concurrent clients for registration and the throughput runs.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Length of each throughput run (`10s`, `500ms`).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Rounds of (no-op run, heartbeat run); the ratio uses their totals.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Latency samples per listing kind.
    #[arg(long, default_value_t = 400)]
    samples: usize,
    /// Time budget per listing kind (fewer samples if exceeded).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    sample_budget: Duration,
    /// Runs of the one-peer-with-many-files registration.
    #[arg(long, default_value_t = 5)]
    big_runs: usize,
    /// Files of that one peer.
    #[arg(long, default_value_t = 10_000)]
    big_files: usize,
    /// Loopback source addresses to register from (127.0.0.2 upwards).
    #[arg(long, default_value_t = 200)]
    source_addrs: usize,
    /// Shell command run once loading is done, before measuring (the script
    /// passes `ANALYZE` for PostgreSQL, what autovacuum would do a minute
    /// later on a server where it is on).
    #[arg(long)]
    after_load_cmd: Option<String>,
    /// Seed of the random names and hashes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Words names are made of; each appears in a few percent of the names.
const WORDS: &[&str] = &[
    "holiday", "report", "invoice", "concert", "lecture", "backup", "draft", "final", "scan",
    "photo", "summer", "winter", "budget", "meeting", "notes", "album", "track", "episode",
    "season", "chapter", "thesis", "slides", "recipe", "family", "garden", "travel", "project",
    "design", "sketch", "demo", "release", "archive", "manual", "guide", "review", "paper",
    "dataset", "sample", "export", "video", "audio", "map", "plan", "letter", "contract", "poster",
    "game", "level", "mod", "patch",
];

/// Extensions of the names.
const EXTS: &[&str] = &[
    "jpg", "png", "pdf", "mp3", "flac", "mkv", "mp4", "zip", "tar.gz", "iso", "txt", "odt", "docx",
    "csv", "epub",
];

/// The common search term (one of `WORDS`).
const COMMON_Q: &str = "concert";
/// The rare search term: in about one file name per `RARE_EVERY` files.
const RARE_Q: &str = "quokka";
const RARE_EVERY: usize = 100_000;

/// Size of the pool of popular contents, as a fraction of all files.
const SHARED_POOL_DIV: usize = 50;
/// One file in `SHARED_EVERY` comes from the popular pool.
const SHARED_EVERY: usize = 5;

fn hash32(rng: &mut StdRng) -> ContentHash {
    ContentHash::from_bytes(rng.random())
}

/// A realistic-looking file name, unique within its peer through `index`.
fn file_name(rng: &mut StdRng, index: usize, rare: bool) -> String {
    let a = WORDS[rng.random_range(0..WORDS.len())];
    let b = WORDS[rng.random_range(0..WORDS.len())];
    let year = rng.random_range(1995..2027);
    let ext = EXTS[rng.random_range(0..EXTS.len())];
    if rare {
        format!("{a}-{RARE_Q}-{year}-{index:05}.{ext}")
    } else {
        format!("{a}_{b} {year} ({index:05}).{ext}")
    }
}

/// Random files: one in [`SHARED_EVERY`] with a hash from `pool`.
fn files(
    rng: &mut StdRng,
    count: usize,
    pool: &[(ContentHash, u64)],
    counter: &mut usize,
) -> anyhow::Result<Vec<FileEntry>> {
    (0..count)
        .map(|i| {
            *counter += 1;
            let rare = (*counter).is_multiple_of(RARE_EVERY);
            let name = FileName::new(file_name(rng, i, rare))?;
            Ok(
                if !pool.is_empty() && rng.random_range(0..SHARED_EVERY) == 0 {
                    let (hash, size) = pool[rng.random_range(0..pool.len())];
                    FileEntry { name, size, hash }
                } else {
                    FileEntry {
                        name,
                        size: rng.random_range(1_000..5_000_000_000),
                        hash: hash32(rng),
                    }
                },
            )
        })
        .collect()
}

/// A registered peer.
struct Registered {
    peer_id: PeerId,
    token: String,
}

/// An HTTP client whose connections come from `ip` (loopback only).
fn client_from(ip: Option<IpAddr>, pool: usize) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(pool)
        .no_proxy();
    if let Some(ip) = ip {
        if !ip.is_loopback() {
            bail!("source address {ip} is not loopback");
        }
        b = b.local_address(ip);
    }
    Ok(b.build()?)
}

/// The `i`-th loopback source address from 127.0.0.2 upwards.
fn source_ip(i: usize) -> IpAddr {
    let n = 2 + i as u32; // 127.0.0.2, …, 127.0.0.255, 127.0.1.0, …
    let [_, b, c, d] = (0x7f00_0000u32 + n).to_be_bytes();
    IpAddr::V4(Ipv4Addr::new(127, b, c, d))
}

async fn register(
    client: &reqwest::Client,
    base: &str,
    port: u16,
    files: Vec<FileEntry>,
) -> anyhow::Result<Registered> {
    let resp = client
        .post(format!("{base}/api/v1/peers"))
        .json(&RegisterRequest { port, files })
        .send()
        .await?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        bail!("registration answered {status}: {text}");
    }
    let r: RegisterResponse = resp.json().await?;
    Ok(Registered {
        peer_id: r.peer_id,
        token: r.token,
    })
}

/// Resident and peak memory of `pid` in KiB, from `/proc/<pid>/status`.
fn memory_kib(pid: Option<u32>) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn show_mem(label: &str, pid: Option<u32>) -> String {
    match memory_kib(pid) {
        Some((rss, hwm)) => {
            let line = format!(
                "{label}: VmRSS {:.1} MiB (peak VmHWM {:.1} MiB)",
                rss as f64 / 1024.0,
                hwm as f64 / 1024.0
            );
            println!("{line}");
            line
        }
        None => format!("{label}: unknown (no --tracker-pid)"),
    }
}

/// Requests per second of `make` run by `concurrency` workers for `duration`.
async fn throughput<F>(
    concurrency: usize,
    duration: Duration,
    make: F,
) -> anyhow::Result<(f64, u64)>
where
    F: Fn(usize) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let next = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (make, next, ok, failed) = (make.clone(), next.clone(), ok.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let done = match make(i).send().await {
                    Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                    _ => false,
                };
                if done {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok((
        ok.load(Ordering::Relaxed) as f64 / secs,
        failed.load(Ordering::Relaxed),
    ))
}

/// p50 and p99 in milliseconds.
fn percentiles(mut ms: Vec<f64>) -> (f64, f64, f64) {
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| {
        let i = ((ms.len() as f64 * p).ceil() as usize).clamp(1, ms.len()) - 1;
        ms[i]
    };
    (at(0.50), at(0.99), ms[ms.len() - 1])
}

/// Latency of one request at a time, `samples` of them or until `budget`.
async fn latency(
    label: &str,
    client: &reqwest::Client,
    samples: usize,
    budget: Duration,
    mut url: impl FnMut(usize) -> String,
) -> anyhow::Result<String> {
    let mut ms = Vec::with_capacity(samples);
    let start = Instant::now();
    let mut bytes = 0usize;
    let mut errors = Vec::new();
    for i in 0..samples {
        if (start.elapsed() > budget && i >= 20) || errors.len() >= 3 {
            break;
        }
        let u = url(i);
        let t = Instant::now();
        let resp = client.get(&u).send().await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        let took = t.elapsed().as_secs_f64() * 1000.0;
        if status.is_success() {
            ms.push(took);
            bytes += body.len();
        } else {
            errors.push(format!("{status} after {took:.0} ms"));
        }
    }
    let n = ms.len();
    let line = if n == 0 {
        format!("| {label} | 0 | failed: {} | | | |", errors.join("; "))
    } else {
        let (p50, p99, max) = percentiles(ms);
        let failed = if errors.is_empty() {
            String::new()
        } else {
            format!(" ({} failed: {})", errors.len(), errors.join("; "))
        };
        format!(
            "| {label} | {n}{failed} | {p50:.2} | {p99:.2} | {max:.2} | {} |",
            bytes.checked_div(n).unwrap_or(0)
        )
    };
    println!("{line}");
    Ok(line)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let base = args.tracker.trim_end_matches('/').to_owned();
    let host = reqwest::Url::parse(&base)
        .context("--tracker is not a URL")?
        .host_str()
        .map(str::to_owned)
        .unwrap_or_default();
    match host.trim_matches(['[', ']']).parse::<IpAddr>() {
        Ok(ip) if ip.is_loopback() => {}
        _ => bail!("--tracker must be a loopback address such as http://127.0.0.1:8080"),
    }
    if args.concurrency == 0 || args.peers == 0 || args.source_addrs == 0 {
        bail!("--peers, --concurrency and --source-addrs must be more than 0");
    }
    let mut report = Vec::new();
    let main_client = client_from(None, args.concurrency)?;
    let live = main_client.get(format!("{base}/livez")).send().await?;
    if !live.status().is_success() {
        bail!("{base}/livez answered {}", live.status());
    }
    report.push(show_mem("memory before loading", args.tracker_pid));

    // Load: peers × files from many source addresses.
    let mut rng = StdRng::seed_from_u64(args.seed);
    let total_files = args.peers * args.files_per_peer;
    let pool: Vec<(ContentHash, u64)> = (0..(total_files / SHARED_POOL_DIV).max(1))
        .map(|_| (hash32(&mut rng), rng.random_range(1_000..5_000_000_000)))
        .collect();
    let clients: Vec<reqwest::Client> = (0..args.source_addrs)
        .map(|i| client_from(Some(source_ip(i)), 4))
        .collect::<anyhow::Result<_>>()?;
    let mut counter = 0usize;
    let mut jobs = Vec::with_capacity(args.peers);
    for i in 0..args.peers {
        let f = files(&mut rng, args.files_per_peer, &pool, &mut counter)?;
        let port = 10_000 + u16::try_from(i / args.source_addrs).unwrap_or(0);
        jobs.push((clients[i % args.source_addrs].clone(), port, f));
    }
    println!(
        "registering {} peers × {} files = {} file entries ({} popular contents, {} source addresses)…",
        args.peers,
        args.files_per_peer,
        total_files,
        pool.len(),
        args.source_addrs
    );
    let t = Instant::now();
    let base2 = base.clone();
    let peers: Vec<Registered> = futures::stream::iter(jobs)
        .map(|(client, port, f)| {
            let base = base2.clone();
            async move { register(&client, &base, port, f).await }
        })
        .buffered(args.concurrency.min(32))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let load_secs = t.elapsed().as_secs_f64();
    let line = format!(
        "loading: {} peers, {} file entries in {load_secs:.1} s ({:.0} files/s)",
        peers.len(),
        total_files,
        total_files as f64 / load_secs
    );
    println!("{line}");
    report.push(line);
    report.push(show_mem("memory after loading", args.tracker_pid));
    if let Some(cmd) = &args.after_load_cmd {
        let t = Instant::now();
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .status()?;
        let line = format!(
            "after loading: `{cmd}` ({status}, {:.1} s)",
            t.elapsed().as_secs_f64()
        );
        println!("{line}");
        report.push(line);
    }

    // (a) heartbeats against the no-op route.
    let peers = Arc::new(peers);
    let mut live_total = 0.0;
    let mut beat_total = 0.0;
    report.push(format!(
        "\n(a) throughput, {} clients, {:?} per run:",
        args.concurrency, args.duration
    ));
    for round in 1..=args.rounds {
        let c = main_client.clone();
        let url = format!("{base}/livez");
        let (live_rps, live_failed) =
            throughput(args.concurrency, args.duration, move |_| c.get(&url)).await?;
        let c = main_client.clone();
        let (b, ps) = (base.clone(), peers.clone());
        let (beat_rps, beat_failed) = throughput(args.concurrency, args.duration, move |i| {
            let p = &ps[i % ps.len()];
            c.post(format!("{b}/api/v1/peers/{}/heartbeat", p.peer_id))
                .bearer_auth(&p.token)
        })
        .await?;
        let line = format!(
            "round {round}: /livez {live_rps:.0} req/s ({live_failed} failed), heartbeat {beat_rps:.0} req/s ({beat_failed} failed), ratio {:.2}",
            beat_rps / live_rps
        );
        println!("{line}");
        report.push(line);
        live_total += live_rps;
        beat_total += beat_rps;
    }
    if args.rounds > 0 {
        let line = format!(
            "heartbeat / no-op ratio over all rounds: {:.2} (target ≥ 0.5)",
            beat_total / live_total
        );
        println!("{line}");
        report.push(line);
    }
    report.push(show_mem(
        "memory after the heartbeat runs",
        args.tracker_pid,
    ));

    // (b) latency, one request at a time.
    report.push(String::from(
        "\n(b) latency, one request at a time (ms):\n\n| request | n | p50 | p99 | max | bytes |\n| --- | --- | --- | --- | --- | --- |",
    ));
    println!("| request | n | p50 | p99 | max | bytes |");
    let c = &main_client;
    let (s, budget) = (args.samples, args.sample_budget);
    let seeds: Vec<ContentHash> = (0..s).map(|_| hash32(&mut rng)).collect();
    report.push(
        latency("GET /files?limit=100 (first page)", c, s, budget, |_| {
            format!("{base}/api/v1/files?limit=100")
        })
        .await?,
    );
    report.push(
        latency(
            "GET /files?limit=100&cursor=<random position>",
            c,
            s,
            budget,
            |i| {
                format!(
                    "{base}/api/v1/files?limit=100&cursor={}",
                    seeds[i % seeds.len()]
                )
            },
        )
        .await?,
    );
    report.push(
        latency(
            &format!("GET /files?q={COMMON_Q}&limit=100 (common)"),
            c,
            s,
            budget,
            |_| format!("{base}/api/v1/files?q={COMMON_Q}&limit=100"),
        )
        .await?,
    );
    report.push(
        latency(
            &format!("GET /files?q={COMMON_Q}&limit=100&cursor=<random>"),
            c,
            s,
            budget,
            |i| {
                format!(
                    "{base}/api/v1/files?q={COMMON_Q}&limit=100&cursor={}",
                    seeds[i % seeds.len()]
                )
            },
        )
        .await?,
    );
    report.push(
        latency(
            &format!(
                "GET /files?q={RARE_Q}&limit=100 (rare: ~{} names)",
                total_files / RARE_EVERY
            ),
            c,
            s,
            budget,
            |_| format!("{base}/api/v1/files?q={RARE_Q}&limit=100"),
        )
        .await?,
    );
    let known: Vec<ContentHash> = {
        let mut r = StdRng::seed_from_u64(args.seed ^ 0x5eed);
        (0..s)
            .map(|_| pool[r.random_range(0..pool.len())].0)
            .collect()
    };
    report.push(
        latency("GET /files/{hash} (popular content)", c, s, budget, |i| {
            format!("{base}/api/v1/files/{}", known[i % known.len()])
        })
        .await?,
    );
    // Peer pages: walk them all once for real cursors, then sample.
    let mut cursors = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(cur) => format!("{base}/api/v1/peers?limit=100&cursor={cur}"),
            None => format!("{base}/api/v1/peers?limit=100"),
        };
        let page: PeerList = c.get(url).send().await?.error_for_status()?.json().await?;
        match page.next_cursor {
            Some(next) if cursors.len() < 100_000 => {
                cursors.push(next.clone());
                cursor = Some(next);
            }
            _ => break,
        }
    }
    report.push(
        latency("GET /peers?limit=100 (first page)", c, s, budget, |_| {
            format!("{base}/api/v1/peers?limit=100")
        })
        .await?,
    );
    if !cursors.is_empty() {
        report.push(
            latency(
                &format!(
                    "GET /peers?limit=100&cursor=<one of {} pages>",
                    cursors.len()
                ),
                c,
                s,
                budget,
                |i| {
                    format!(
                        "{base}/api/v1/peers?limit=100&cursor={}",
                        cursors[(i * 7919) % cursors.len()]
                    )
                },
            )
            .await?,
        );
    }

    // (c) one peer with many files.
    report.push(format!(
        "\n(c) registering one peer with {} files:",
        args.big_files
    ));
    let mut times = Vec::new();
    for run in 0..args.big_runs {
        let f = files(&mut rng, args.big_files, &pool, &mut counter)?;
        let client = client_from(Some(source_ip(args.source_addrs + run)), 1)?;
        let t = Instant::now();
        let p = register(&client, &base, 40_000, f).await?;
        let secs = t.elapsed().as_secs_f64();
        times.push(format!("{secs:.3} s"));
        println!("big registration {}: {secs:.3} s", run + 1);
        // Leave again, so every run sees the same database size.
        client
            .delete(format!("{base}/api/v1/peers/{}", p.peer_id))
            .bearer_auth(&p.token)
            .send()
            .await?
            .error_for_status()?;
    }
    report.push(format!("runs: {}", times.join(", ")));

    report.push(String::from("\n(d) memory:"));
    report.push(show_mem("memory at the end", args.tracker_pid));

    println!("\n===== figures =====");
    for line in report {
        println!("{line}");
    }
    Ok(())
}
