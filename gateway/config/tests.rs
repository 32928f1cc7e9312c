use std::time::Duration;

use clap::Parser;

use std::path::PathBuf;

use super::*;

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

#[test]
fn worker_threads_default_to_the_usable_cpus_and_zero_is_refused() {
    let usable = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(resolve(&[]).worker_threads, usable);
    assert_eq!(resolve(&["--worker-threads", "1"]).worker_threads, 1);
    let err = try_resolve(&["--worker-threads", "0"]).unwrap_err();
    assert!(err.contains("--worker-threads 0"), "{err}");
}

fn try_resolve(args: &[&str]) -> Result<Config, String> {
    let args = Args::try_parse_from(std::iter::once("gatehouse").chain(args.iter().copied()))
        .map_err(|e| e.to_string())?;
    args.resolve()
}

#[test]
fn trusted_proxies_and_compat_classes_reach_the_translate_settings() {
    let config = try_resolve(&[
        "--trusted-proxies",
        "10.0.0.0/8, 192.168.1.1",
        "--ingress-class-compat",
        "nginx,nginx-internal",
    ])
    .unwrap();
    let t = &config.translate;
    assert!(t.trusted_proxies.contains("10.9.9.9".parse().unwrap()));
    assert!(!t.trusted_proxies.contains("11.0.0.1".parse().unwrap()));
    assert_eq!(t.ingress_class_compat, ["nginx", "nginx-internal"]);
    let none = try_resolve(&[]).unwrap();
    assert!(
        none.translate.trusted_proxies.is_empty() && none.translate.ingress_class_compat.is_empty()
    );
}

#[test]
fn a_bad_trusted_proxy_is_an_error_naming_the_flag_and_entry() {
    let err = try_resolve(&["--trusted-proxies", "10.0.0.0/8,lb.internal"]).unwrap_err();
    assert_eq!(
        err,
        "--trusted-proxies: \"lb.internal\" is not an IP address or CIDR"
    );
}

#[test]
fn check_takes_paths_format_and_classes() {
    let args =
        Args::try_parse_from(["gatehouse", "check", "-", "dir", "--format", "json"]).unwrap();
    let Some(Command::Check(check)) = args.command else {
        panic!("check")
    };
    assert_eq!(check.paths, [PathBuf::from("-"), PathBuf::from("dir")]);
    assert_eq!(check.format, LogFormat::Json);
    assert_eq!(check.ingress_class_compat, ["nginx"]);
    let args = Args::try_parse_from(["gatehouse", "check"]).unwrap();
    let Some(Command::Check(check)) = args.command else {
        panic!("check")
    };
    assert_eq!(
        check.paths,
        [PathBuf::from("-")],
        "standard input by default"
    );
}
