//! Hostile HTTP clients against a real `protond run` on 127.0.0.1 (issue 15, point 2): the
//! server's limits keep it answering and its memory bounded whatever an anonymous client
//! holds open, refuses foreign `Host` names, and acts once on a replayed webhook delivery.
//!
//! One daemon serves every case, in turn. While an attack is held, a prober opens a fresh
//! connection to `/healthz` every 100 ms (each answer must come within one second) and
//! samples the daemon's resident set and open descriptors. One line per case:
//! `cargo test --test it hostile_http:: -- --nocapture` prints
//! `hostile: <case>: bound ..., peak RSS .. MiB, .. s` (README, "Limits and guarantees").
//!
//! The repos are empty (nothing to deploy, no AWS): a cycle is only a fetch, so the cycles a
//! webhook triggers can be counted exactly.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};

use crate::common::memory::{rss, wait_with_peak};
use crate::common::world::World;

const GH_SECRET: &str = "hostile-github-secret-0123";
const GL_TOKEN: &str = "hostile-gitlab-token-4567";
/// The daemon's RSS bound under every attack.
const RSS_BOUND_MIB: u64 = 200;
/// The default `server.max_body_bytes`.
const MAX_BODY: usize = 5 * 1024 * 1024;

/// A `protond run` on a free port of 127.0.0.1; killed when dropped.
struct Daemon {
    child: Option<Child>,
    addr: SocketAddr,
    log: std::path::PathBuf,
    world: World,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Daemon {
    fn start() -> Self {
        // Empty repos (nothing to deploy), no polling, no watcher: only webhooks start cycles.
        let world = World::builder()
            .repo("platform-templates", "templates\n")
            .repo("platform-envs", "environments\n")
            .repo("payments", "services\n")
            .aws_down()
            .env("HOSTILE_GH", GH_SECRET)
            .env("HOSTILE_GL", GL_TOKEN)
            .config(|c| {
                c.top("poll_interval = \"1h\"")
                    .section("[daemon]\nwatch = false\nshutdown_grace = \"5s\"")
                    .section(
                        "[server]\ngithub_secret_env = \"HOSTILE_GH\"\ngitlab_token_env = \"HOSTILE_GL\"\n\
                         header_timeout = \"2s\"\nbody_timeout = \"4s\"\nidle_timeout = \"30s\"\nrequest_timeout = \"8s\"",
                    )
                    .repo_line("platform-envs", "allow_empty = true")
                    .repo_line("payments", "allow_empty = true");
            })
            .build();
        let port = crate::common::free_port();
        let log = world.dir("daemon.log");
        let child = world
            .command(&["run", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("protond runs");
        let d = Self {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            world,
        };
        let start = Instant::now();
        while d.get("/readyz").0 != 200 {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the daemon did not get ready; log:\n{}",
                d.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        d
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One request on a fresh connection (`Connection: close`): status and body.
    fn request(&self, head: &str, body: &[u8]) -> (u16, String) {
        exchange(self.addr, head, body).unwrap_or_else(|e| (0, e))
    }

    fn get(&self, path: &str) -> (u16, String) {
        self.request(
            &format!("GET {path} HTTP/1.1\r\nHost: {}\r\n", self.addr),
            b"",
        )
    }

    fn metric(&self, name: &str, labels: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        let series = if labels.is_empty() {
            format!("{name} ")
        } else {
            format!("{name}{{{labels}}} ")
        };
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    fn refused(&self, reason: &str) -> f64 {
        self.metric(
            "protond_http_refused_total",
            &format!("reason=\"{reason}\""),
        )
    }

    fn cycles(&self) -> f64 {
        self.metric("protond_reconcile_cycles_total", "")
    }
}

/// Sends `head` (request line and headers, each ending in CRLF), then `body`; reads the
/// answer (by its `Content-Length`) and closes first, so that the daemon's side keeps no
/// `TIME_WAIT` that a later connection from the same port could run into (on loopback, such
/// a collision costs the client a one-second SYN retransmission).
fn exchange(addr: SocketAddr, head: &str, body: &[u8]) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut req = format!("{head}\r\n").into_bytes();
    req.extend_from_slice(body);
    s.write_all(&req).map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let (head_len, length) = loop {
        let n = s.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!("closed after {:?}", String::from_utf8_lossy(&out)));
        }
        out.extend_from_slice(&buf[..n]);
        if let Some(i) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&out[..i]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| format!("no content-length in {head:?}"))?;
            break (i + 4, length);
        }
    };
    while out.len() < head_len + length {
        let n = s.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before the whole body".into());
        }
        out.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {text:?}"))?;
    Ok((status, text[head_len..].to_string()))
}

/// What the prober saw while an attack was held.
#[derive(Debug, Default)]
struct Watch {
    probes: usize,
    slowest: Duration,
    failures: Vec<String>,
    peak_rss_mib: u64,
    last_rss_mib: u64,
    most_fds: usize,
}

/// Probes `/healthz` on a fresh connection every 100 ms and samples the daemon until
/// `stop`; each answer must be a 200 within one second.
fn prober(addr: SocketAddr, pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Watch> {
    std::thread::spawn(move || {
        let mut w = Watch::default();
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            let r = exchange(
                addr,
                &format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n"),
                b"",
            );
            let took = t.elapsed();
            w.probes += 1;
            w.slowest = w.slowest.max(took);
            match r {
                Ok((200, body)) if body == "ok\n" && took < Duration::from_secs(1) => {}
                other => w.failures.push(format!("after {took:?}: {other:?}")),
            }
            if let Some(r) = rss(pid) {
                w.peak_rss_mib = w.peak_rss_mib.max(r.peak_mib());
                w.last_rss_mib = r.now_kib / 1024;
            }
            let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
            w.most_fds = w.most_fds.max(fds);
            std::thread::sleep(Duration::from_millis(100));
        }
        w
    })
}

/// Runs `attack` (which opens and returns its connections) and holds them for `hold` while
/// the prober runs; returns what the prober saw and the connections.
fn under_attack<T>(d: &Daemon, hold: Duration, attack: impl FnOnce() -> T) -> (Watch, T) {
    // Each case's own peak: `VmHWM` starts again from the current resident set.
    let _ = std::fs::write(format!("/proc/{}/clear_refs", d.pid()), "5");
    let stop = Arc::new(AtomicBool::new(false));
    let probe = prober(d.addr, d.pid(), stop.clone());
    let opened = attack();
    std::thread::sleep(hold);
    stop.store(true, Ordering::Relaxed);
    (probe.join().expect("prober"), opened)
}

/// Whether the daemon has closed `s` (end of stream or reset, without an answer).
fn closed_by_daemon(mut s: &TcpStream) -> bool {
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

fn assert_served(case: &str, w: &Watch, d: &Daemon) {
    assert!(
        w.failures.is_empty() && w.probes >= 10,
        "{case}: /healthz failed {} of {} probes: {:#?}\nlog tail:\n{}",
        w.failures.len(),
        w.probes,
        w.failures,
        d.logs()
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        w.peak_rss_mib < RSS_BOUND_MIB,
        "{case}: peak RSS {} MiB is over {RSS_BOUND_MIB} MiB",
        w.peak_rss_mib
    );
}

/// Raises this test process's open-file soft limit (the idle-connection case needs more than
/// the usual 1,024).
fn raise_own_fd_limit(need: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read or write only the struct passed, alive for the call.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim), 0);
        if lim.rlim_cur < need {
            assert!(
                lim.rlim_max >= need,
                "this test needs {need} open files; the hard limit is {}",
                lim.rlim_max
            );
            lim.rlim_cur = lim.rlim_max;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim), 0);
        }
    }
}

fn sign(body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(GH_SECRET.as_bytes()).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Unauthenticated GitHub deliveries that each declare a 5 MiB body (a well-formed but
/// wrong signature, so the body must be read before it can be refused), send `part` bytes of
/// it and stall.
fn stalled_bodies(addr: SocketAddr, n: usize, part: usize) -> Vec<TcpStream> {
    let head = format!(
        "POST /webhooks/github HTTP/1.1\r\nHost: {addr}\r\nX-GitHub-Event: push\r\n\
         X-Hub-Signature-256: sha256={}\r\nContent-Type: application/json\r\nContent-Length: {MAX_BODY}\r\n\r\n",
        "0".repeat(64)
    );
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let head = head.clone();
            std::thread::spawn(move || {
                let chunk = vec![b'x'; part];
                (0..n / 4)
                    .filter_map(|_| {
                        let mut s = TcpStream::connect(addr).ok()?;
                        s.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
                        // Refused ones are closed by the daemon: a failed write is expected.
                        let _ = s
                            .write_all(head.as_bytes())
                            .and_then(|()| s.write_all(&chunk));
                        Some(s)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().expect("attacker"))
        .collect()
}

fn report(case: &str, bound: &str, w: &Watch, took: Duration) {
    println!(
        "hostile: {case}: bound {bound}, peak RSS {} MiB, {:.1} s ({} /healthz probes, slowest {} ms, at most {} daemon fds, RSS {} MiB at the end)",
        w.peak_rss_mib,
        took.as_secs_f64(),
        w.probes,
        w.slowest.as_millis(),
        w.most_fds,
        w.last_rss_mib
    );
}

#[test]
fn hostile_clients_cannot_stop_the_server() {
    raise_own_fd_limit(4096);
    let d = Daemon::start();
    let baseline = rss(d.pid()).expect("rss").peak_mib();
    println!("hostile: baseline: peak RSS {baseline} MiB");

    // 200 stalled unauthenticated 5 MiB bodies, 256 KiB sent each: 50 MiB offered, at most
    // 32 MiB (max_inflight_body_bytes) held, the rest refused; cut at body_timeout (4 s).
    // Meanwhile 50 request heads that stall half-way are cut at header_timeout (2 s).
    let t = Instant::now();
    let (w, (bodies, heads)) = under_attack(&d, Duration::from_secs(5), || {
        let heads: Vec<TcpStream> = (0..50)
            .map(|_| {
                let mut s = TcpStream::connect(d.addr).expect("connect");
                s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0")
                    .expect("write");
                s
            })
            .collect();
        (stalled_bodies(d.addr, 200, 256 * 1024), heads)
    });
    assert_served("stalled bodies", &w, &d);
    let (budget, timeouts) = (d.refused("body_budget"), d.refused("body_timeout"));
    assert!(
        budget > 0.0 && timeouts > 0.0,
        "budget {budget}, timeouts {timeouts}"
    );
    assert_eq!(budget + timeouts, 200.0);
    let cut_heads = heads.iter().filter(|s| closed_by_daemon(s)).count();
    assert_eq!(cut_heads, 50);
    assert_eq!(d.refused("header_timeout"), 50.0);
    drop((bodies, heads));
    report(
        "200 stalled unauthenticated 5 MiB webhook bodies, 50 stalled heads",
        &format!(
            "32 MiB of bodies in flight, body_timeout 4 s, header_timeout 2 s ({budget} bodies refused over the budget, {timeouts} cut at the timeout, {cut_heads} heads cut)"
        ),
        &w,
        t.elapsed(),
    );

    // 2,000 idle connections: at most 512 are kept (max_connections), the oldest idle ones
    // closed for each new one.
    let t = Instant::now();
    let (w, idle) = under_attack(&d, Duration::from_secs(1), || {
        // Paced (100 every 50 ms) so that the probes run while the flood comes in.
        let mut conns = Vec::new();
        for _ in 0..20 {
            conns.extend((0..100).filter_map(|_| TcpStream::connect(d.addr).ok()));
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(conns.len(), 2000, "connections the kernel refused");
        conns
    });
    assert_served("idle connections", &w, &d);
    drop(idle);

    let shed = d.refused("connection_shed");
    assert!(shed >= 1400.0, "only {shed} connections shed");
    assert!(
        w.most_fds < 512 + 64 + 100,
        "the daemon held {} fds",
        w.most_fds
    );
    report(
        "2,000 idle connections",
        &format!("512 connections ({shed} idle ones closed for new ones)"),
        &w,
        t.elapsed(),
    );

    // Refused before a byte of the body is read: an answer at once although no body comes.
    let t = Instant::now();
    let declared = |path: &str, headers: &str, len: usize| {
        d.request(
            &format!(
                "POST {path} HTTP/1.1\r\nHost: {}\r\n{headers}Content-Length: {len}\r\n",
                d.addr
            ),
            b"",
        )
        .0
    };
    assert_eq!(
        declared("/webhooks/gitlab", "X-Gitlab-Token: wrong\r\n", MAX_BODY),
        401
    );
    assert_eq!(declared("/webhooks/github", "", MAX_BODY), 401);
    assert_eq!(
        declared(
            "/webhooks/github",
            &format!("X-Hub-Signature-256: sha256={}\r\n", "0".repeat(64)),
            MAX_BODY + 1
        ),
        413
    );
    assert_eq!(declared("/api/v1/reconcile", "", MAX_BODY), 403);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    println!(
        "hostile: refused before the body: bound no body byte read (wrong GitLab token 401, no GitHub signature 401, 5 MiB + 1 declared 413, API without token 403), {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // DNS rebinding: a foreign Host is refused; loopback names are answered.
    let (status, body) = d.request(
        &format!(
            "GET /api/v1/deployments HTTP/1.1\r\nHost: rebind.example:{}\r\n",
            d.addr.port()
        ),
        b"",
    );
    assert_eq!(status, 421, "{body}");
    assert!(body.contains("server.allowed_hosts"), "{body}");
    let local = d.request(
        &format!(
            "GET /healthz HTTP/1.1\r\nHost: localhost:{}\r\n",
            d.addr.port()
        ),
        b"",
    );
    assert_eq!(local.0, 200);
    println!("hostile: foreign Host: bound 421 for rebind.example, 200 for localhost");

    // A signed GitHub delivery replayed four times (same id, a new id, no id): one cycle.
    let t = Instant::now();
    let before = d.cycles();
    let payments = d.world.dir("payments");
    let push = serde_json::json!({
        "ref": "refs/heads/main",
        "repository": { "clone_url": payments.display().to_string() }
    })
    .to_string();
    let github = |delivery: Option<&str>| {
        let id = delivery.map_or(String::new(), |id| format!("X-GitHub-Delivery: {id}\r\n"));
        d.request(
            &format!(
                "POST /webhooks/github HTTP/1.1\r\nHost: {}\r\nX-GitHub-Event: push\r\n{id}\
                 X-Hub-Signature-256: {}\r\nContent-Length: {}\r\n",
                d.addr,
                sign(push.as_bytes()),
                push.len()
            ),
            push.as_bytes(),
        )
    };
    let first = github(Some("delivery-1"));
    assert_eq!(first.0, 202, "{first:?}");
    for replay in [
        Some("delivery-1"),
        Some("delivery-1"),
        Some("delivery-2"),
        None,
    ] {
        let r = github(replay);
        assert_eq!(r.0, 200, "{replay:?}: {r:?}");
        assert!(r.1.contains("\"duplicate\":true"), "{r:?}");
    }
    let cycles = settle(&d, before);
    assert_eq!(
        cycles - before,
        1.0,
        "cycles after one delivery and 4 replays"
    );
    // GitLab: a retry with the same idempotency key, answered without reading its body.
    let gitlab = |key: &str| {
        let body = serde_json::json!({"project": {"git_http_url": payments.display().to_string()}})
            .to_string();
        d.request(
            &format!(
                "POST /webhooks/gitlab HTTP/1.1\r\nHost: {}\r\nX-Gitlab-Event: Push Hook\r\n\
                 X-Gitlab-Token: {GL_TOKEN}\r\nIdempotency-Key: {key}\r\nContent-Length: {}\r\n",
                d.addr,
                body.len()
            ),
            body.as_bytes(),
        )
    };
    assert_eq!(gitlab("key-1").0, 202);
    assert_eq!(gitlab("key-1").0, 200);
    let after = settle(&d, cycles);
    assert_eq!(
        after - cycles,
        1.0,
        "cycles after a GitLab delivery and its retry"
    );
    let accepted = d.metric("protond_webhooks_total", "state=\"accepted\"");
    let duplicates = d.metric("protond_webhooks_total", "state=\"duplicate\"");
    assert_eq!((accepted, duplicates), (2.0, 5.0));
    let logged = d.logs().matches("Duplicate webhook delivery").count();
    assert_eq!(logged, 5);
    println!(
        "hostile: replayed deliveries: bound one cycle per delivery id (GitHub: 1 + 4 replays, 1 cycle; GitLab: 1 + 1 retry, 1 cycle), {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // SIGTERM with idle connections open: they are closed and the daemon exits cleanly.
    let t = Instant::now();
    let idle: Vec<TcpStream> = (0..50)
        .filter_map(|_| TcpStream::connect(d.addr).ok())
        .collect();
    let mut d = d;
    let child = d.child.take().expect("running");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let (out, peak) = wait_with_peak(child, Duration::from_secs(20));
    drop(idle);
    assert!(out.status.success(), "{:?}; log:\n{}", out.status, d.logs());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    println!(
        "hostile: shutdown with 50 idle connections open: bound a clean exit, peak RSS {} MiB, {:.1} s",
        peak.peak_mib(),
        t.elapsed().as_secs_f64()
    );
}

/// Waits until the cycle count moves past `from`, then a while longer for any cycle that
/// should not come; returns the count then.
fn settle(d: &Daemon, from: f64) -> f64 {
    let start = Instant::now();
    while d.cycles() <= from {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no cycle came; log:\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    d.cycles()
}
