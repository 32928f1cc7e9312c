//! The flags of issue 9: compat classes and trusted proxies.

use super::*;

fn resolve(args: &[&str]) -> Result<Config, String> {
    let args = Args::try_parse_from(std::iter::once("gatehouse").chain(args.iter().copied()))
        .map_err(|e| e.to_string())?;
    args.resolve()
}

#[test]
fn trusted_proxies_and_compat_classes_reach_the_translate_settings() {
    let config = resolve(&[
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
    let none = resolve(&[]).unwrap();
    assert!(
        none.translate.trusted_proxies.is_empty() && none.translate.ingress_class_compat.is_empty()
    );
}

#[test]
fn a_bad_trusted_proxy_is_an_error_naming_the_flag_and_entry() {
    let err = resolve(&["--trusted-proxies", "10.0.0.0/8,lb.internal"]).unwrap_err();
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
