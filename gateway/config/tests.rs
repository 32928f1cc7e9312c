use std::time::Duration;

use clap::Parser;

use super::{Args, Config, LogFormat};

fn resolve(flags: &[&str]) -> Config {
    let args = Args::try_parse_from(std::iter::once("gatehouse").chain(flags.iter().copied()))
        .unwrap_or_else(|err| panic!("{flags:?} refused: {err}"));
    args.resolve()
        .unwrap_or_else(|err| panic!("{flags:?} not resolved: {err}"))
}

#[test]
fn a_flag_given_twice_takes_its_last_value() {
    // The Helm chart passes its own flags first and the admin's extraArgs after them.
    let config = resolve(&["--log-format", "text", "--log-format", "json"]);
    assert_eq!(config.log_format, LogFormat::Json);

    let config = resolve(&[
        "--http-listen=0.0.0.0:8080",
        "--admin-listen=0.0.0.0:9090",
        "--http-listen=127.0.0.1:18080",
        "--admin-listen",
        "127.0.0.1:19090",
    ]);
    assert_eq!(config.http_listen, ([127, 0, 0, 1], 18080).into());
    assert_eq!(config.admin_listen, ([127, 0, 0, 1], 19090).into());

    let config = resolve(&[
        "--watch-ingress-without-class",
        "--watch-ingress-without-class=false",
    ]);
    assert!(!config.translate.watch_ingress_without_class);

    let config = resolve(&["--shutdown-delay=5s", "--shutdown-delay=0s"]);
    assert_eq!(config.shutdown_delay, Duration::ZERO);
}

#[test]
fn repeated_watch_namespaces_add_up() {
    let config = resolve(&["--watch-namespace", "a", "--watch-namespace=b,c"]);
    assert_eq!(config.kube.watch_namespaces, ["a", "b", "c"]);
}

#[test]
fn shutdown_delay_is_off_unless_set_by_flag_or_file() {
    assert_eq!(resolve(&[]).shutdown_delay, Duration::ZERO);
    assert_eq!(
        resolve(&["--shutdown-delay", "5s"]).shutdown_delay,
        Duration::from_secs(5)
    );
    assert_eq!(
        resolve(&["--shutdown-delay=1500ms"]).shutdown_delay,
        Duration::from_millis(1500)
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("gatehouse.yaml");
    std::fs::write(&file, "shutdown-delay: 2s\n").expect("write config");
    let path = file.to_str().expect("UTF-8 path");
    assert_eq!(
        resolve(&["--config", path]).shutdown_delay,
        Duration::from_secs(2)
    );
    assert_eq!(
        resolve(&["--config", path, "--shutdown-delay=3s"]).shutdown_delay,
        Duration::from_secs(3),
        "the flag beats the file"
    );

    let err = Args::try_parse_from(["gatehouse", "--shutdown-delay", "soon"])
        .expect_err("not a duration");
    assert!(err.to_string().contains("--shutdown-delay"), "{err}");
}

#[test]
fn a_listen_address_of_only_a_port_means_every_ipv4_address() {
    let config = resolve(&["--http-listen", ":18080", "--https-listen=:18443"]);
    assert_eq!(config.http_listen, ([0, 0, 0, 0], 18080).into());
    assert_eq!(config.https_listen, ([0, 0, 0, 0], 18443).into());
    let err = Args::try_parse_from(["gatehouse", "--admin-listen", ":nine"]).unwrap_err();
    assert!(err.to_string().contains("not an address"), "{err}");
}

#[test]
fn log_level_is_a_checked_filter() {
    assert_eq!(resolve(&[]).log_level, None);
    let config = resolve(&["--log-level", "info,gatehouse::acme=debug"]);
    assert_eq!(
        config.log_level.as_deref(),
        Some("info,gatehouse::acme=debug")
    );
    let args = Args::try_parse_from(["gatehouse", "--log-level", "info,=[bad"]).unwrap();
    let err = args.resolve().unwrap_err();
    assert!(err.contains("--log-level"), "{err}");
}
