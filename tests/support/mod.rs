//! Shared test harness: start the real `gatehouse` binary from a manifest directory, start real
//! origin servers, make real clients. Each test file `mod support;`s this.
#![allow(dead_code)]

pub mod bind;
pub mod blackhole;
pub mod certs;
pub mod origin;
pub mod pebble;
pub mod yaml;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (the OS picks; the socket is closed before the gateway binds it).
pub fn free_port() -> SocketAddr {
    use std::collections::HashSet;
    use std::hash::{BuildHasher, RandomState};
    use std::sync::Mutex;
    // Ports a test binds later are picked below the kernel's ephemeral range (32768 and up by
    // default), where no outgoing connection's source port can take them in between; picked at
    // random, and never twice in one test process.
    static HANDED: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let seed = RandomState::new();
    let mut handed = HANDED.lock().unwrap_or_else(|e| e.into_inner());
    let handed = handed.get_or_insert_with(HashSet::new);
    for attempt in 0u64.. {
        let port = 10_000 + (seed.hash_one((std::process::id(), attempt)) % 22_000) as u16;
        if handed.contains(&port) {
            continue;
        }
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            handed.insert(port);
            return l.local_addr().expect("addr");
        }
        if attempt > 1_000 {
            break;
        }
    }
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// A running `gatehouse` process and its manifest directory; killed on drop.
pub struct Gatehouse {
    child: Option<Child>,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
    args: Vec<String>,
}

impl Gatehouse {
    /// Starts Gatehouse with one manifest file `main.yaml` holding `yaml`, and waits until ready.
    pub fn start(yaml: &str) -> Self {
        Self::start_with(&[("main.yaml", yaml)], &[])
    }

    /// Starts Gatehouse with the given manifest files and extra command-line arguments.
    /// Free ports are picked before Gatehouse binds them, so another test may take one in
    /// between: a start that fails to listen is tried again on new ports.
    pub fn start_with(files: &[(&str, &str)], extra_args: &[&str]) -> Self {
        for _ in 0..3 {
            let gh = Self::spawn_with(files, extra_args);
            if gh.wait_listening() {
                gh.wait_ready();
                return gh;
            }
        }
        let gh = Self::spawn_with(files, extra_args);
        gh.wait_ready();
        gh
    }

    /// False when the process exited because a listen address was taken.
    fn wait_listening(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok((200, _)) = admin_get(self.admin, "/readyz") {
                return true;
            }
            if self.exited() {
                return !self.log_text().contains("cannot listen on");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }

    /// Like [`Gatehouse::start_with`] without waiting for readiness. With a `--kubeconfig`
    /// argument it reads the Kubernetes API instead of a manifest directory.
    pub fn spawn_with(files: &[(&str, &str)], extra_args: &[&str]) -> Self {
        Self::spawn_on(free_port(), free_port(), files, extra_args)
    }

    /// Like [`Gatehouse::spawn_with`] with the plain and HTTPS listeners on given addresses
    /// (an ACME test CA must know them before Gatehouse starts).
    pub fn spawn_on(
        http: SocketAddr,
        https: SocketAddr,
        files: &[(&str, &str)],
        extra_args: &[&str],
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, yaml) in files {
            write_file(dir.path(), name, yaml);
        }
        let mut gh = Self {
            child: None,
            http,
            https,
            admin: free_port(),
            log: dir.path().join("gatehouse.log"),
            dir,
            args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        gh.spawn();
        gh
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(&self.log).expect("log file");
        let manifests = self.dir.path().join("manifests");
        std::fs::create_dir_all(&manifests).expect("manifests dir");
        let mut command = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
        if !self.args.iter().any(|a| a.starts_with("--kubeconfig")) {
            command.arg("--manifests").arg(&manifests);
        }
        let child = command
            .arg(format!("--http-listen={}", self.http))
            .arg(format!("--https-listen={}", self.https))
            .arg(format!("--admin-listen={}", self.admin))
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start gatehouse");
        self.child = Some(child);
    }

    /// Stops the process (SIGKILL) and starts it again with the same directory and arguments.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready();
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and returns the process, to watch it drain.
    pub fn terminate(&mut self) -> Child {
        let child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        child
    }

    pub fn manifests(&self) -> PathBuf {
        self.dir.path().join("manifests")
    }

    /// Writes (or replaces, atomically) a manifest file.
    pub fn write(&self, name: &str, yaml: &str) {
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, yaml).expect("write manifest");
        std::fs::rename(&tmp, self.manifests().join(name)).expect("rename manifest");
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.manifests().join(name)).expect("remove manifest");
    }

    /// Waits up to 20 s for /readyz to answer 200.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok((200, _)) = admin_get(self.admin, "/readyz") {
                return;
            }
            if self.exited() {
                panic!(
                    "gatehouse exited before it was ready; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("gatehouse not ready after 20 s; log:\n{}", self.log_text());
    }

    /// Whether the process has exited (a zombie not yet reaped, or gone): read from /proc, so a
    /// shared reference will do.
    fn exited(&self) -> bool {
        let Some(child) = &self.child else {
            return true;
        };
        match std::fs::read_to_string(format!("/proc/{}/stat", child.id())) {
            // The state follows the parenthesised command name: `PID (comm) S ...`.
            Ok(stat) => stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z')),
            Err(_) => true,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET` on the admin listener: status and body.
    pub fn admin(&self, path: &str) -> (u16, String) {
        admin_get(self.admin, path).expect("admin request")
    }

    /// The current `/routes` dump.
    pub fn routes(&self) -> serde_json::Value {
        serde_json::from_str(&self.admin("/routes").1).expect("routes json")
    }

    /// Waits until `check` holds for the `/routes` dump (at most 5 s).
    pub fn wait_routes(&self, what: &str, check: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if check(&self.routes()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("routes never showed {what}: {:#}", self.routes());
    }

    /// A metric's value summed over series whose labels contain all of `labels` (`k="v"` pairs).
    pub fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        let text = self.admin("/metrics").1;
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter(|l| labels.iter().all(|lab| l.contains(lab)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// `http://127.0.0.1:PORT{path}` on the plain listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }
}

impl Drop for Gatehouse {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn write_file(dir: &Path, name: &str, text: &str) {
    let path = dir.join("manifests").join(name);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

/// A minimal blocking HTTP/1.0 GET, so harness checks need no runtime.
pub fn admin_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: admin\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// An HTTP client for tests: resolves every name to the loopback, no proxies, no redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// Service + one EndpointSlice for `name` in namespace `ns` with the given endpoints.
pub fn service_yaml(ns: &str, name: &str, endpoints: &[SocketAddr]) -> String {
    let mut out = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  ports: [{{name: http, port: 80}}]\n"
    );
    // One slice per distinct port, as EndpointSlices carry one port list for all their endpoints.
    let mut ports: Vec<u16> = endpoints.iter().map(|e| e.port()).collect();
    ports.sort();
    ports.dedup();
    for port in ports {
        let addrs: Vec<String> = endpoints
            .iter()
            .filter(|e| e.port() == port)
            .map(|e| format!("\"{}\"", e.ip()))
            .collect();
        out.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-{port}\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints:\n  - addresses: [{}]\n    conditions: {{ready: true}}\n",
            addrs.join(", ")
        ));
    }
    out
}

// === helpers beyond the basic harness ===

impl Gatehouse {
    /// A client builder that resolves each of `hosts` to this gateway's plain listener, so a URL
    /// `http://HOST/...` carries the real host (Host header in HTTP/1.1, `:authority` in HTTP/2).
    pub fn client_builder(&self, hosts: &[&str]) -> reqwest::ClientBuilder {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30));
        for host in hosts {
            builder = builder.resolve(host, self.http);
        }
        builder
    }

    /// An HTTP/1.1 client for `hosts` (see [`Gatehouse::client_builder`]).
    pub fn client_for(&self, hosts: &[&str]) -> reqwest::Client {
        self.client_builder(hosts)
            .http1_only()
            .build()
            .expect("client")
    }

    /// An HTTP/2 client (h2c, prior knowledge) for `hosts`.
    pub fn h2c_client_for(&self, hosts: &[&str]) -> reqwest::Client {
        self.client_builder(hosts)
            .http2_prior_knowledge()
            .build()
            .expect("client")
    }

    /// Waits up to `timeout` until the log holds a line containing every one of `parts`;
    /// returns that line.
    pub fn wait_log(&self, parts: &[&str], timeout: Duration) -> String {
        let mut found = None;
        wait_until(&format!("a log line with {parts:?}"), timeout, || {
            found = self
                .log_text()
                .lines()
                .find(|l| parts.iter().all(|p| l.contains(p)))
                .map(str::to_owned);
            found.is_some()
        });
        found.unwrap_or_default()
    }

    /// The child process, e.g. to wait for its exit after [`Gatehouse::terminate`].
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// Polls `check` every 20 ms until it holds; panics naming `what` after `timeout`. Blocking:
/// call it from a multi-threaded runtime (or `spawn_blocking`) when origins share the runtime.
pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// One response read off a raw connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Status line and header lines, as received.
    pub head: String,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// First value of a header (name in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `request` exactly as written on a new connection and reads the response until the
/// server closes (so the request should say `Connection: close`). For what a normal client would
/// rewrite: dot segments, encoded slashes, odd headers.
pub async fn raw_request(addr: SocketAddr, request: &[u8]) -> std::io::Result<RawResponse> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(request).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut out))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no response"))??;
    parse_raw_response(&out)
}

/// `GET target` for `host` sent as written, with extra header lines.
pub async fn raw_get(addr: SocketAddr, host: &str, target: &str, headers: &[&str]) -> RawResponse {
    let mut request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    raw_request(addr, request.as_bytes())
        .await
        .expect("raw request")
}

fn parse_raw_response(bytes: &[u8]) -> std::io::Result<RawResponse> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of head"))?;
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let mut body = bytes[split + 4..].to_vec();
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    if chunked {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok(RawResponse { status, head, body })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}
