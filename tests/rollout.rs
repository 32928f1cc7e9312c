//! A rolling update as a cluster does it: two Gatehouse replicas from the same manifests behind
//! a balancer that sends each request to the next replica whose /readyz answers 200 (checked
//! every 100 ms, out after two failures in a row, as a readiness probe would), one replica
//! terminated with SIGTERM. With
//! `--shutdown-delay` longer than the balancer takes to notice, no connection is refused and no
//! request fails.
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::yaml::{docs, ingress, svc};
use support::{Gatehouse, admin_get, origin, service_yaml};

/// What the client loop saw.
#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    refused: AtomicUsize,
    failed: AtomicUsize,
    /// Requests answered by the terminated replica after SIGTERM was sent.
    ok_after_term: AtomicUsize,
    /// What the failed requests got, for the assertion's message.
    failures: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.failures.lock().unwrap().push(what);
    }
}

/// The replicas' plain-HTTP addresses and whether the balancer believes each one ready.
struct Balancer {
    targets: Vec<SocketAddr>,
    ready: Vec<AtomicBool>,
    next: AtomicUsize,
}

impl Balancer {
    /// The next ready replica (index), round robin. One turn of the counter per request, then
    /// the replicas in order from there: with a counter turn per replica tried, concurrent
    /// requests could each be handed the same not-ready replica twice and find none.
    fn pick(&self) -> Option<usize> {
        let n = self.targets.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| self.ready[i].load(Ordering::Relaxed))
    }
}

async fn rollout(shutdown_delay: &str) -> (Tally, std::process::ExitStatus) {
    let (slow, mut started) = origin::slow("slow", Duration::from_millis(1500)).await;
    let yaml = docs(&[
        service_yaml("default", "web", &[origin::echo("a").await]),
        service_yaml("default", "slow", &[slow]),
        ingress("web")
            .prefix("app.test", "/", svc("web", 80))
            .prefix("app.test", "/slow", svc("slow", 80))
            .yaml(),
    ]);
    let args = ["--shutdown-delay", shutdown_delay, "--drain-timeout", "10s"];
    let mut replicas = [
        Gatehouse::start_with(&[("main.yaml", &yaml)], &args),
        Gatehouse::start_with(&[("main.yaml", &yaml)], &args),
    ];
    let balancer = Arc::new(Balancer {
        targets: replicas.iter().map(|gh| gh.http).collect(),
        ready: replicas.iter().map(|_| AtomicBool::new(true)).collect(),
        next: AtomicUsize::new(0),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let terminated = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());

    // The readiness probe: every 100 ms, a replica out after two failures in a row (a
    // readiness probe's failureThreshold), so the balancer notices 100-200 ms after the replica
    // stops being ready, whatever the machine's load does to the timing.
    let admins: Vec<SocketAddr> = replicas.iter().map(|gh| gh.admin).collect();
    let probe = {
        let (balancer, stop, tally) = (balancer.clone(), stop.clone(), tally.clone());
        std::thread::spawn(move || {
            let mut failures = vec![0u32; admins.len()];
            while !stop.load(Ordering::Relaxed) {
                for (i, admin) in admins.iter().enumerate() {
                    let answer = admin_get(*admin, "/readyz");
                    let ready = matches!(answer, Ok((200, _)));
                    if !ready && i == 1 {
                        let what = format!("probe of the surviving replica: {answer:?}");
                        tally.failures.lock().unwrap().push(what);
                    }
                    failures[i] = if ready { 0 } else { failures[i] + 1 };
                    balancer.ready[i].store(failures[i] < 2, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    // Clients: each request on a new connection, as a balancer spreading connections does.
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (balancer, stop, terminated, tally) = (
            balancer.clone(),
            stop.clone(),
            terminated.clone(),
            tally.clone(),
        );
        workers.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client");
            while !stop.load(Ordering::Relaxed) {
                let Some(i) = balancer.pick() else {
                    tally.fail("no replica ready".into());
                    continue;
                };
                let after_term = i == 0 && terminated.load(Ordering::Relaxed);
                let result = match client
                    .get(format!("http://{}/", balancer.targets[i]))
                    .header("host", "app.test")
                    .send()
                    .await
                {
                    Ok(resp) if resp.status() == 200 => resp.bytes().await.map(|_| 200),
                    Ok(resp) => Ok(resp.status().as_u16()),
                    Err(err) => Err(err),
                };
                match result {
                    Ok(200) => {
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                        if after_term {
                            tally.ok_after_term.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(err) if err.is_connect() => {
                        tally.refused.fetch_add(1, Ordering::Relaxed);
                    }
                    other => tally.fail(format!(
                        "replica {i}{}: {other:?}",
                        if after_term { " after SIGTERM" } else { "" }
                    )),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A slow request in flight on replica 0 when it is told to stop: it must finish.
    let slow_request = {
        let target = balancer.targets[0];
        tokio::spawn(async move {
            reqwest::Client::new()
                .get(format!("http://{target}/slow"))
                .header("host", "app.test")
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    started.recv().await.expect("slow request in flight");
    terminated.store(true, Ordering::Relaxed);
    let mut child = replicas[0].terminate();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "replica did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        slow_request.await.expect("join").ok(),
        Some(200),
        "the request in flight at SIGTERM did not finish"
    );
    // The remaining replica serves on alone for a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    probe.join().expect("probe");
    replicas[1].kill();
    let tally = Arc::try_unwrap(tally).ok().expect("workers done");
    (tally, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_terminated_with_a_shutdown_delay_drops_no_request() {
    let (tally, status) = rollout("1s").await;
    let (ok, refused, failed) = (
        tally.ok.into_inner(),
        tally.refused.into_inner(),
        tally.failed.into_inner(),
    );
    eprintln!(
        "ok {ok}, refused {refused}, failed {failed}, served by the terminated replica after SIGTERM {}",
        tally.ok_after_term.load(Ordering::Relaxed)
    );
    assert!(status.success(), "exit {status}");
    assert!(ok > 100, "too little traffic to tell: {ok}");
    assert_eq!(
        (refused, failed),
        (0, 0),
        "connections refused, requests failed: {:?}",
        tally.failures.lock().unwrap()
    );
    // The balancer kept sending to the replica for a while after SIGTERM: the delay is what
    // made those requests succeed.
    assert!(tally.ok_after_term.into_inner() > 0);
}

/// Without the delay the same rollout refuses connections: the balancer has not noticed yet.
/// (This is what the delay is for; it also shows the test above can see a drop.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_shutdown_delay_the_same_rollout_refuses_connections() {
    let (tally, _) = rollout("0s").await;
    let lost = tally.refused.into_inner() + tally.failed.into_inner();
    assert!(
        lost > 0,
        "no request lost without the delay: the test cannot see drops"
    );
}
