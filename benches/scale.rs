//! Start and change at scale (project issue 5, "flat at 100,000 hosts"):
//! `cargo bench --bench scale` (see benches/README.md).
//!
//! Generates 10 manifest files of 1,000 Ingresses each (10 hosts per Ingress, three paths per
//! host, a Service and an EndpointSlice per Ingress), then measures, side by side:
//!
//! - **in process**, what the manifest thread does: a cold `ManifestDir::scan()` (read and parse
//!   every file), `objects()`, `translate()` from nothing; then for one rewritten file (one
//!   Ingress changed) the same three steps, with translate() given the snapshot in service (as
//!   the gateway does) beside a translate() from nothing;
//! - **end to end from manifests**, with the `gatehouse` binary: time from spawn to `/readyz`
//!   answering 200, its peak RSS (`VmHWM`), and for one rewritten Ingress the time from the
//!   file's rename until a request (sent every millisecond on a keep-alive connection) reaches
//!   the new backend (the manifest source's settle window included);
//! - **end to end from the Kubernetes API**: the same objects served as JSON by the in-process
//!   fake API server of the tests (`tests/support/fake_apiserver.rs`, the real list/watch
//!   protocol), the same three figures, a change being one Ingress replaced through the API.
//!
//! Options (after `--`): `--ingresses N` (10,000), `--hosts N` per Ingress (10), `--files N`
//! (10), `--repeats N` (10), `--only inprocess|e2e|kube`, `--no-scratch` (skip the translate()
//! from nothing after each change). `GATEHOUSE_BIN=path` runs another build
//! (e.g. `target/release/gatehouse`) end to end instead of the one cargo built for this bench.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gatehouse::snapshot::{Backend, Snapshot};
use gatehouse::sources::manifests::ManifestDir;
use gatehouse::translate::{Memo, Settings, translate};

#[path = "../tests/support/fake_apiserver.rs"]
mod fake_apiserver;
#[path = "../tests/support/yaml.rs"]
mod yaml;

/// Counts allocations, so each phase reports how many it made (a proxy for its memory churn).
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The shape of the generated set.
#[derive(Clone, Debug)]
struct Shape {
    ingresses: usize,
    hosts: usize,
    files: usize,
    repeats: usize,
    inprocess: bool,
    e2e: bool,
    kube: bool,
    /// Also time a translate() from nothing after each change, for comparison.
    scratch: bool,
}

impl Shape {
    fn from_args() -> Self {
        let mut shape = Shape {
            ingresses: 10_000,
            hosts: 10,
            files: 10,
            repeats: 10,
            inprocess: true,
            e2e: true,
            kube: true,
            scratch: true,
        };
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut i = 0;
        while i < args.len() {
            let value = |i: usize| -> usize {
                args.get(i + 1)
                    .and_then(|v| v.replace('_', "").parse().ok())
                    .unwrap_or_else(|| panic!("{} needs a number", args[i]))
            };
            match args[i].as_str() {
                "--ingresses" => shape.ingresses = value(i),
                "--hosts" => shape.hosts = value(i),
                "--files" => shape.files = value(i),
                "--repeats" => shape.repeats = value(i),
                "--only" => {
                    let only = args.get(i + 1).map(String::as_str);
                    shape.inprocess = only == Some("inprocess");
                    shape.e2e = only == Some("e2e");
                    shape.kube = only == Some("kube");
                }
                "--no-scratch" => {
                    shape.scratch = false;
                    i += 1;
                    continue;
                }
                // `cargo bench` passes `--bench`; a name filter means nothing here.
                _ => {
                    i += 1;
                    continue;
                }
            }
            i += 2;
        }
        shape
    }

    fn per_file(&self) -> usize {
        self.ingresses.div_ceil(self.files)
    }
}

/// Host `j` of Ingress `i`.
fn host(i: usize, j: usize) -> String {
    format!("h{j}.app{i}.team{}.example.com", i % 100)
}

/// The host and path whose backend the change benchmarks switch.
const CHANGED_PATH: &str = "/";

/// File `f` of the set: for each of its Ingresses a Service with three endpoints (not reachable:
/// only the changed route is requested), an EndpointSlice, and the Ingress with `hosts` hosts of
/// three paths each. The first path of Ingress 0 goes to Service `origin` instead.
fn file_yaml(shape: &Shape, f: usize, origin: &str) -> String {
    let first = f * shape.per_file();
    let last = (first + shape.per_file()).min(shape.ingresses);
    let mut out = String::with_capacity((last - first) * (600 + shape.hosts * 330));
    for i in first..last {
        let (ns, name) = (format!("ns-{}", i % 50), format!("svc-{i}"));
        let ip = |k: usize| {
            format!(
                "10.{}.{}.{}",
                i / 65_536 % 256,
                i / 256 % 256,
                (i + k) % 256
            )
        };
        let endpoints = [
            yaml::ready(&ip(0)),
            yaml::ready(&ip(1)),
            yaml::ready(&ip(2)),
        ];
        out.push_str(&yaml::docs(&[
            yaml::service(&ns, &name, &[("http", 80)]),
            yaml::endpoint_slice(
                &ns,
                &format!("{name}-1"),
                &name,
                &[("http", 8080)],
                &endpoints,
            ),
            ingress_yaml(shape, i, origin),
        ]));
        out.push_str("---\n");
    }
    out
}

/// Ingress `i`: `hosts` hosts of three paths each to its Service (the first path of Ingress 0 to
/// Service `origin` instead).
fn ingress_yaml(shape: &Shape, i: usize, origin: &str) -> String {
    let (ns, name) = (format!("ns-{}", i % 50), format!("svc-{i}"));
    let mut ingress = yaml::ingress(&format!("ing-{i}")).namespace(&ns);
    for j in 0..shape.hosts {
        let h = host(i, j);
        let first_backend = if i == 0 && j == 0 {
            yaml::svc(origin, 80)
        } else {
            yaml::svc(&name, 80)
        };
        ingress = ingress
            .prefix(&h, CHANGED_PATH, first_backend)
            .prefix(&h, "/api", yaml::svc(&name, 80))
            .exact(&h, "/healthz", yaml::svc(&name, 80));
    }
    ingress.yaml()
}

/// Services `origin-a` and `origin-b` in the namespace of Ingress 0, one local origin each.
fn origins_yaml(a: SocketAddr, b: SocketAddr) -> String {
    let mut parts = Vec::new();
    for (name, addr) in [("origin-a", a), ("origin-b", b)] {
        parts.push(yaml::service("ns-0", name, &[("http", 80)]));
        parts.push(yaml::endpoint_slice(
            "ns-0",
            name,
            name,
            &[("http", addr.port())],
            &[yaml::ready(&addr.ip().to_string())],
        ));
    }
    yaml::docs(&parts)
}

fn file_name(f: usize) -> String {
    format!("ingresses-{f:02}.yaml")
}

/// Writes a file as deploy tools do: a temporary file renamed over the old one.
fn put(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("write manifest");
    std::fs::rename(&tmp, dir.join(name)).expect("rename manifest");
}

/// Writes the whole set into `dir`; returns the YAML bytes written.
fn write_set(shape: &Shape, dir: &Path, a: SocketAddr, b: SocketAddr) -> usize {
    let mut bytes = 0;
    for f in 0..shape.files {
        let text = file_yaml(shape, f, "origin-a");
        bytes += text.len();
        put(dir, &file_name(f), &text);
    }
    put(dir, "origins.yaml", &origins_yaml(a, b));
    bytes
}

/// Median and maximum of some durations.
fn stats(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let median = samples.get(samples.len() / 2).copied().unwrap_or_default();
    let max = samples.last().copied().unwrap_or_default();
    (median, max)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Runs `f`, returning its result, how long it took and how many allocations it made.
fn measure<T>(f: impl FnOnce() -> T) -> (T, Duration, u64) {
    let allocations = ALLOCATIONS.load(Ordering::Relaxed);
    let start = Instant::now();
    let out = f();
    let took = start.elapsed();
    (out, took, ALLOCATIONS.load(Ordering::Relaxed) - allocations)
}

/// One table row: a name, median, maximum, allocations, and the target it is held against.
struct Row {
    name: String,
    median: String,
    max: String,
    extra: String,
    target: String,
}

fn row(name: &str, median: String, max: String, extra: String, target: &str) -> Row {
    Row {
        name: name.into(),
        median,
        max,
        extra,
        target: target.into(),
    }
}

fn print_table(title: &str, rows: &[Row]) {
    println!("\n{title}");
    println!(
        "  {:<52} {:>11} {:>11} {:>14}  target",
        "", "median", "max", "allocs | CPU"
    );
    for r in rows {
        println!(
            "  {:<52} {:>11} {:>11} {:>14}  {}",
            r.name, r.median, r.max, r.extra, r.target
        );
    }
}

/// The Service the changed route goes to in a snapshot.
fn changed_target(snapshot: &Snapshot) -> String {
    match snapshot
        .routes
        .lookup(&host(0, 0), CHANGED_PATH)
        .map(|r| &r.backend)
    {
        Some(Backend::Service(s)) => s.service.name.clone(),
        other => format!("{other:?}"),
    }
}

fn in_process(shape: &Shape) {
    let dir = tempfile::tempdir().expect("tempdir");
    let unused: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    let bytes = write_set(shape, dir.path(), unused, unused);
    let settings = Settings::default();
    // Changes are read at once here (the gateway waits out the settle window first: that is in
    // the end-to-end figures).
    let mut manifests = ManifestDir::new(dir.path()).with_settle(Duration::ZERO);
    let (report, scan_cold, scan_allocs) = measure(|| manifests.scan().expect("scan"));
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let (objects, objects_cold, objects_allocs) = measure(|| manifests.objects());
    let mut memo = Memo::default();
    let (mut snapshot, translate_cold, translate_allocs) =
        measure(|| translate(objects, &settings, &mut memo));
    let routes: usize = snapshot.routes.hosts().iter().map(|(_, r)| r.len()).sum();
    println!(
        "\nset: {} Ingresses, {} hosts, {} routes, {} files, {:.1} MiB of YAML; {} objects, {} warnings",
        snapshot.owned_ingresses.len(),
        snapshot.routes.host_count(),
        routes,
        shape.files,
        bytes as f64 / (1024.0 * 1024.0),
        objects.len(),
        snapshot.warnings.len(),
    );
    assert_eq!(changed_target(&snapshot), "origin-a");

    let mut rows = vec![
        row(
            "start: scan (read + parse every file)",
            ms(scan_cold),
            "".into(),
            scan_allocs.to_string(),
            "",
        ),
        row(
            "start: objects()",
            ms(objects_cold),
            "".into(),
            objects_allocs.to_string(),
            "",
        ),
        row(
            "start: translate() from nothing",
            ms(translate_cold),
            "".into(),
            translate_allocs.to_string(),
            "",
        ),
        row(
            "start: total",
            ms(scan_cold + objects_cold + translate_cold),
            "".into(),
            "".into(),
            "< 2 s (with process start)",
        ),
    ];

    // What polling costs while nothing changes: one scan (a stat per file) per interval.
    let idle: Vec<Duration> = (0..50)
        .map(|_| measure(|| manifests.scan().expect("scan")).1)
        .collect();
    let interval = manifests.poll_interval();
    let (idle_median, idle_max) = stats(idle);
    rows.push(row(
        &format!("idle poll: scan, every {}", ms(interval)),
        ms(idle_median),
        ms(idle_max),
        format!(
            "{:.2}% CPU",
            idle_median.as_secs_f64() * 100.0 / interval.as_secs_f64()
        ),
        "negligible",
    ));

    let (mut scans, mut objs, mut incremental, mut scratch, mut totals) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut scan_a, mut incr_a, mut scratch_a) = (0, 0, 0);
    for n in 0..shape.repeats {
        let origin = if n % 2 == 0 { "origin-b" } else { "origin-a" };
        put(dir.path(), &file_name(0), &file_yaml(shape, 0, origin));
        let (report, scan, a) = measure(|| manifests.scan().expect("scan"));
        assert!(report.changed && report.errors.is_empty());
        let (objects, obj, _) = measure(|| manifests.objects());
        let (next, incr, b) = measure(|| translate(objects, &settings, &mut memo));
        assert_eq!(changed_target(&next), origin);
        if shape.scratch {
            let (full, full_took, c) =
                measure(|| translate(objects, &settings, &mut Memo::default()));
            assert_eq!(changed_target(&full), origin);
            drop(full);
            scratch.push(full_took);
            scratch_a += c;
        }
        // The old snapshot is dropped after the new one is in service, off the measured path.
        drop(std::mem::replace(&mut snapshot, next));
        (scan_a, incr_a) = (scan_a + a, incr_a + b);
        scans.push(scan);
        objs.push(obj);
        incremental.push(incr);
        totals.push(scan + obj + incr);
    }
    let per = |total: u64| (total / shape.repeats.max(1) as u64).to_string();
    let add = |rows: &mut Vec<Row>, name: &str, samples: Vec<Duration>, extra: String, t: &str| {
        let (median, max) = stats(samples);
        rows.push(row(name, ms(median), ms(max), extra, t));
    };
    let name = format!("change (1 Ingress in a file of {}): scan", shape.per_file());
    add(&mut rows, &name, scans, per(scan_a), "");
    add(&mut rows, "change: objects()", objs, "".into(), "");
    add(
        &mut rows,
        "change: translate() from the snapshot in service",
        incremental,
        per(incr_a),
        "",
    );
    if shape.scratch {
        add(
            &mut rows,
            "change: translate() from nothing (for comparison)",
            scratch,
            per(scratch_a),
            "",
        );
    }
    add(
        &mut rows,
        "change: total (scan + objects + translate)",
        totals,
        "".into(),
        "< 100 ms with the poll wait",
    );
    print_table("in process (the manifest thread's work)", &rows);
}

/// A local origin answering every request with `name` as the body, keep-alive.
fn origin(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind origin");
    let addr = listener.local_addr().expect("origin addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut writer = stream;
                let mut line = String::new();
                loop {
                    // Read one request head (requests here have no body).
                    loop {
                        line.clear();
                        match reader.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => {}
                        }
                    }
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{name}",
                        name.len()
                    );
                    if writer.write_all(response.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// A minimal HTTP/1.1 keep-alive client: status and body of `GET path` with a Host header.
struct Client {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
}

impl Client {
    fn new(addr: SocketAddr) -> Self {
        Self { addr, conn: None }
    }

    fn get(&mut self, host: &str, path: &str) -> Option<(u16, String)> {
        let result = self.try_get(host, path);
        if result.is_none() {
            self.conn = None;
        }
        result
    }

    fn try_get(&mut self, host: &str, path: &str) -> Option<(u16, String)> {
        if self.conn.is_none() {
            let stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).ok()?;
            stream.set_nodelay(true).ok()?;
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .ok()?;
            self.conn = Some(BufReader::new(stream));
        }
        let conn = self.conn.as_mut()?;
        let request = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\n\r\n");
        conn.get_mut().write_all(request.as_bytes()).ok()?;
        let mut line = String::new();
        conn.read_line(&mut line).ok()?;
        let status: u16 = line.split(' ').nth(1)?.parse().ok()?;
        let mut length = 0;
        let mut close = false;
        loop {
            line.clear();
            if conn.read_line(&mut line).ok()? == 0 {
                return None;
            }
            if line == "\r\n" {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().ok()?;
            }
            close |= lower.starts_with("connection:") && lower.contains("close");
        }
        let mut body = vec![0; length];
        conn.read_exact(&mut body).ok()?;
        if close {
            self.conn = None;
        }
        Some((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// `VmHWM` or `VmRSS` of a process in MiB.
fn memory_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// The gateway under test; killed on drop.
struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn end_to_end(shape: &Shape) {
    let (a, b) = (origin("origin-a"), origin("origin-b"));
    let dir = tempfile::tempdir().expect("tempdir");
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).expect("mkdir");
    write_set(shape, &manifests, a, b);
    // Files written for the changes, prepared before the clock starts.
    let changed = [
        file_yaml(shape, 0, "origin-b"),
        file_yaml(shape, 0, "origin-a"),
    ];
    let args = vec!["--manifests".into(), manifests.clone().into_os_string()];
    run_gateway(shape, "from manifest files", dir.path(), args, |n| {
        let tmp = manifests.join(".change.tmp");
        std::fs::write(&tmp, &changed[n % 2]).expect("write");
        let written = Instant::now();
        std::fs::rename(&tmp, manifests.join(file_name(0))).expect("rename");
        written
    });
}

fn end_to_end_kube(shape: &Shape) {
    let (a, b) = (origin("origin-a"), origin("origin-b"));
    let dir = tempfile::tempdir().expect("tempdir");
    // The fake API server answers on its own threads, as a real one would on its own machine.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let api = runtime.block_on(fake_apiserver::FakeApi::start());
    let mut bytes = 0;
    for f in 0..shape.files {
        let text = file_yaml(shape, f, "origin-a");
        bytes += text.len();
        api.apply_yaml(&text);
    }
    api.apply_yaml(&origins_yaml(a, b));
    println!(
        "\nfake API server: {} objects ({:.1} MiB of YAML)",
        api.resource_version() - 1,
        bytes as f64 / (1024.0 * 1024.0)
    );
    let changed = [
        ingress_yaml(shape, 0, "origin-b"),
        ingress_yaml(shape, 0, "origin-a"),
    ];
    let kubeconfig = api.kubeconfig(dir.path());
    let args = vec![
        "--kubeconfig".into(),
        kubeconfig.into_os_string(),
        "--leader-election-namespace=gatehouse".into(),
    ];
    run_gateway(shape, "from the Kubernetes API", dir.path(), args, |n| {
        let written = Instant::now();
        api.apply_yaml(&changed[n % 2]);
        written
    });
    drop(runtime);
}

/// Starts the gateway with `args` (logging into `dir`), times it to ready, then `repeats`
/// changes: `change(n)` makes change `n` (route to `origin-b` when even, `origin-a` when odd)
/// and returns when it was made; the clock runs until a request reaches the new origin.
fn run_gateway(
    shape: &Shape,
    title: &str,
    dir: &Path,
    args: Vec<std::ffi::OsString>,
    mut change: impl FnMut(usize) -> Instant,
) {
    let binary: PathBuf = std::env::var_os("GATEHOUSE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_gatehouse").into());
    let (http, admin) = (free_port(), free_port());
    let log_path = dir.join("gatehouse.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let started = Instant::now();
    let child = Command::new(&binary)
        .args(args)
        .arg(format!("--http-listen={http}"))
        .arg(format!("--https-listen={}", free_port()))
        .arg(format!("--admin-listen={admin}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    let gateway = Gateway(child);
    let pid = gateway.0.id();
    let mut admin_client = Client::new(admin);
    loop {
        if let Some((200, _)) = admin_client.get("admin", "/readyz") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "not ready after 120 s; see {}",
            log_path.display()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let ready = started.elapsed();
    let hwm_ready = memory_mib(pid, "VmHWM:");
    let rss_ready = memory_mib(pid, "VmRSS:");

    let mut client = Client::new(http);
    let host = host(0, 0);
    assert_eq!(
        client
            .get(&host, CHANGED_PATH)
            .map(|(_, body)| body)
            .as_deref(),
        Some("origin-a"),
        "the first route is not served"
    );
    let mut samples = Vec::new();
    for n in 0..shape.repeats {
        // Changes land at any point of the source's poll cycle.
        std::thread::sleep(Duration::from_millis(300 + (n as u64 * 137) % 250));
        let want = if n % 2 == 0 { "origin-b" } else { "origin-a" };
        let written = change(n);
        loop {
            if client
                .get(&host, CHANGED_PATH)
                .map(|(_, body)| body)
                .as_deref()
                == Some(want)
            {
                break;
            }
            assert!(
                written.elapsed() < Duration::from_secs(30),
                "change {n} not served after 30 s"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        samples.push(written.elapsed());
    }
    let hwm_after = memory_mib(pid, "VmHWM:");
    let rss_after = memory_mib(pid, "VmRSS:");
    drop(gateway);
    let (median, max) = stats(samples);
    let mib = |v: f64| format!("{v:.0} MiB");
    let ready_target = if title.contains("manifest") {
        "< 3 s"
    } else {
        "< 2 s"
    };
    let rows = [
        row(
            "start -> /readyz 200",
            ms(ready),
            "".into(),
            "".into(),
            ready_target,
        ),
        row(
            "RSS when ready (VmRSS / VmHWM)",
            mib(rss_ready),
            mib(hwm_ready),
            "".into(),
            "< 300 MiB",
        ),
        row(
            &format!("change -> served ({} changes)", shape.repeats),
            ms(median),
            ms(max),
            "".into(),
            "< 100 ms",
        ),
        row(
            "RSS after the changes (VmRSS / VmHWM)",
            mib(rss_after),
            mib(hwm_after),
            "".into(),
            "< 300 MiB",
        ),
    ];
    print_table(&format!("end to end {title} ({})", binary.display()), &rows);
}

fn main() {
    let shape = Shape::from_args();
    println!(
        "gatehouse scale: {} Ingresses x {} hosts x 3 paths in {} files, {} changes",
        shape.ingresses, shape.hosts, shape.files, shape.repeats
    );
    if shape.inprocess {
        in_process(&shape);
    }
    if shape.e2e {
        end_to_end(&shape);
    }
    if shape.kube {
        end_to_end_kube(&shape);
    }
}
