//! A real authoritative DNS server for tests: BIND 9 (`named`, Debian's `bind9`) on a loopback
//! port, primary for one zone that takes RFC 2136 dynamic updates signed with a TSIG key made
//! by `tsig-keygen` (`bind9-utils`). Records are read back with `dig` (`bind9-dnsutils`). The
//! process dies on drop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// Name of the TSIG key allowed to update the zone.
pub const KEY_NAME: &str = "gatehouse-acme";

pub struct Bind {
    dir: tempfile::TempDir,
    /// Where it answers, over UDP and TCP.
    pub addr: SocketAddr,
    pub zone: String,
    child: Option<Child>,
}

impl Bind {
    /// Starts `named` as primary for `zone` (no records but its SOA and NS) and waits until it
    /// answers for it.
    pub fn start(zone: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = |name: &str| dir.path().join(name).display().to_string();
        let key = Command::new("tsig-keygen")
            .args(["-a", "hmac-sha256", KEY_NAME])
            .output()
            .expect("run tsig-keygen (apt-get install bind9-utils)");
        assert!(key.status.success(), "tsig-keygen failed");
        std::fs::write(dir.path().join("key.conf"), &key.stdout).expect("key file");
        std::fs::write(
            dir.path().join("zone.db"),
            format!(
                "$TTL 60\n@ IN SOA ns.{zone}. admin.{zone}. 1 60 60 600 60\n@ IN NS ns.{zone}.\nns IN A 127.0.0.1\n"
            ),
        )
        .expect("zone file");
        let addr = free_port();
        let config = format!(
            r#"include "{key}";
options {{
  directory "{dir}";
  pid-file "{pid}";
  session-keyfile "{session}";
  listen-on port {port} {{ 127.0.0.1; }};
  listen-on-v6 {{ none; }};
  recursion no;
  dnssec-validation no;
}};
controls {{ }};
zone "{zone}" {{ type primary; file "{zonefile}"; allow-update {{ key "{KEY_NAME}"; }}; }};
"#,
            key = path("key.conf"),
            dir = dir.path().display(),
            pid = path("named.pid"),
            session = path("session.key"),
            port = addr.port(),
            zonefile = path("zone.db"),
        );
        std::fs::write(dir.path().join("named.conf"), config).expect("named.conf");
        let log = std::fs::File::create(dir.path().join("named.log")).expect("log");
        let child = Command::new("named")
            .arg("-g")
            .arg("-c")
            .arg(dir.path().join("named.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start named (apt-get install bind9)");
        let bind = Self {
            dir,
            addr,
            zone: zone.to_owned(),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while bind.dig(zone, "SOA").is_empty() {
            assert!(
                Instant::now() < deadline,
                "named did not start; log:\n{}",
                bind.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        bind
    }

    /// The TSIG key file, in BIND's format, as Gatehouse reads it.
    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("key.conf")
    }

    /// The records of `name` of type `kind`, as `dig +short` prints them.
    pub fn dig(&self, name: &str, kind: &str) -> Vec<String> {
        let out = Command::new("dig")
            .arg(format!("@{}", self.addr.ip()))
            .args(["-p", &self.addr.port().to_string()])
            .args(["+short", "+norecurse", "+time=2", "+tries=1", name, kind])
            .output()
            .expect("run dig (apt-get install bind9-dnsutils)");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with(';'))
            .map(str::to_owned)
            .collect()
    }

    /// What `named` logged so far (it logs every update it applies).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default()
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
