//! Shared test harness: start the real `gatehouse` binary from a manifest directory, start real
//! origin servers, make real clients. Each test file `mod support;`s this.
#![allow(dead_code)]

pub mod origin;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (the OS picks; the socket is closed before the gateway binds it).
pub fn free_port() -> SocketAddr {
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
    pub fn start_with(files: &[(&str, &str)], extra_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, yaml) in files {
            write_file(dir.path(), name, yaml);
        }
        let mut gh = Self {
            child: None,
            http: free_port(),
            https: free_port(),
            admin: free_port(),
            log: dir.path().join("gatehouse.log"),
            dir,
            args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        gh.spawn();
        gh.wait_ready();
        gh
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(&self.log).expect("log file");
        let manifests = self.dir.path().join("manifests");
        std::fs::create_dir_all(&manifests).expect("manifests dir");
        let child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .arg("--manifests")
            .arg(&manifests)
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
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
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
            if let Some(status) = self.child.as_ref().and_then(|_| None::<i32>) {
                panic!("gatehouse exited with {status}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("gatehouse not ready after 20 s; log:\n{}", self.log_text());
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
fn admin_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: admin\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
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
        let addrs: Vec<String> = endpoints.iter().filter(|e| e.port() == port).map(|e| format!("\"{}\"", e.ip())).collect();
        out.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-{port}\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints:\n  - addresses: [{}]\n    conditions: {{ready: true}}\n",
            addrs.join(", ")
        ));
    }
    out
}
