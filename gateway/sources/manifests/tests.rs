use super::*;
use crate::objects::ObjectKey;

use crate::test_util::yaml::{docs, endpoint_slice, ingress, ready, service, svc};

fn kinds(objects: &[Object]) -> Vec<String> {
    objects.iter().map(Object::describe).collect()
}

/// Writes a file the way a deploy tool would: a new file renamed over the old one.
fn put(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let tmp = dir.join(format!(".{}.tmp", name.replace('/', "_")));
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, &path).expect("rename");
}

/// A directory read without a settle window: every change is read at the next scan.
fn unsettled(root: impl Into<PathBuf>) -> ManifestDir {
    ManifestDir::new(root).with_settle(Duration::ZERO)
}

fn ingress_keys(dir: &ManifestDir) -> Vec<String> {
    dir.objects()
        .ingresses
        .keys()
        .map(|k| k.to_string())
        .collect()
}

#[test]
fn multi_document_yaml_gives_every_object_in_order() {
    let text = docs(&[
        service("shop", "web", &[("http", 80)]),
        endpoint_slice(
            "shop",
            "web-1",
            "web",
            &[("http", 8080)],
            &[ready("10.0.0.1")],
        ),
        ingress("web")
            .namespace("shop")
            .prefix("a.test", "/", svc("web", 80))
            .yaml(),
    ]);
    let objects = parse_documents(&text).expect("parses");
    assert_eq!(
        kinds(&objects),
        [
            "Service shop/web",
            "EndpointSlice shop/web-1",
            "Ingress shop/web"
        ]
    );
}

#[test]
fn empty_documents_and_comments_are_skipped() {
    let text = format!(
        "# leading comment\n---\n---\n{}---\n# only a comment\n",
        service("default", "web", &[("http", 80)])
    );
    assert_eq!(
        kinds(&parse_documents(&text).expect("parses")),
        ["Service default/web"]
    );
    assert!(parse_documents("").expect("empty file parses").is_empty());
}

#[test]
fn missing_namespace_means_default() {
    let text =
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n";
    let objects = parse_documents(text).expect("parses");
    assert_eq!(kinds(&objects), ["Service default/web"]);
}

#[test]
fn list_kind_is_unpacked() {
    let text = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Service, metadata: {name: a, namespace: x}}\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: ignored}}\n- {apiVersion: networking.k8s.io/v1, kind: IngressClass, metadata: {name: gatehouse}, spec: {controller: gatehouse.dev/ingress-controller}}\n";
    let objects = parse_documents(text).expect("parses");
    assert_eq!(kinds(&objects), ["Service x/a", "IngressClass gatehouse"]);
}

#[test]
fn kinds_gatehouse_does_not_read_are_ignored() {
    let text = docs(&[
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 2}\n"
            .to_owned(),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {a: b}\n".to_owned(),
        // Same kind name, other group: not the Ingress Gatehouse reads.
        "apiVersion: example.com/v1\nkind: Ingress\nmetadata: {name: odd}\nspec: 42\n".to_owned(),
        "apiVersion: gatehouse.dev/v1alpha1\nkind: StaticSite\nmetadata: {name: docs}\nspec: {root: site}\n"
            .to_owned(),
    ]);
    let objects = parse_documents(&text).expect("parses");
    assert_eq!(kinds(&objects), ["StaticSite default/docs"]);
}

/// YAML ends a line at a lone carriage return too, so `...` after one ends a document: the
/// split at `---` lines cannot see that, and such a text is parsed as one stream. (Found by the
/// manifests fuzz target: the split parse took a text the stream parse refuses.)
#[test]
fn lone_carriage_returns_parse_as_the_stream_does() {
    let text = "\n&..\r...\r!p)\u{7}Tersi\r\r\rm";
    let stream = parse_stream(text).map(|o| kinds(&o));
    assert!(stream.is_err(), "{stream:?}");
    assert_eq!(parse_documents(text).map(|o| kinds(&o)), stream);
    let old_mac = "kind: Service\rapiVersion: v1\rmetadata: {name: a, namespace: default}\r---\rkind: Nothing\r";
    assert_eq!(
        parse_documents(old_mac).map(|o| kinds(&o)),
        parse_stream(old_mac).map(|o| kinds(&o))
    );
}

/// A NUL byte is not YAML: the file is refused with its line, not cut short there (the
/// stream reader took the NUL for the end of the input and dropped the rest; the split parse
/// refused the document, so the two disagreed: found by the manifests fuzz target).
#[test]
fn a_nul_byte_is_refused_with_its_line() {
    let text = format!(
        "{}---\nkind: Service\n...\0{}",
        service("default", "kept", &[("http", 80)]),
        service("default", "after", &[("http", 80)])
    );
    let err = parse_documents(&text).expect_err("a NUL byte");
    assert!(err.contains("line 8: a NUL byte"), "{err}");
    assert_eq!(parse_stream(&text).map(|o| kinds(&o)), Err(err.clone()));
    assert_eq!(reparse("", &text).map(|o| kinds(&o)), Err(err));
    let fuzzed = "\n--- #r}\n...\0*p;-";
    assert_eq!(
        parse_documents(fuzzed).map(|o| kinds(&o)),
        parse_stream(fuzzed).map(|o| kinds(&o))
    );
}

#[test]
fn bad_document_error_names_document_kind_and_name() {
    let text = docs(&[
        service("default", "ok", &[("http", 80)]),
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: broken}\nspec:\n  rules: not-a-list\n"
            .to_owned(),
    ]);
    let err = parse_documents(&text).expect_err("bad spec");
    assert!(err.contains("document 2"), "{err}");
    assert!(err.contains("Ingress"), "{err}");
    assert!(err.contains("\"broken\""), "{err}");
}

#[test]
fn document_without_kind_or_name_is_an_error() {
    let err = parse_documents("metadata: {name: what}\n").expect_err("no kind");
    assert!(
        err.contains("document 1") && err.contains("no apiVersion or kind"),
        "{err}"
    );
    let err =
        parse_documents("apiVersion: v1\nkind: Service\nmetadata: {}\n").expect_err("no name");
    assert!(err.contains("Service has no metadata.name"), "{err}");
}

#[test]
fn invalid_yaml_is_an_error() {
    let err = parse_documents("apiVersion: v1\nkind: [unclosed\n").expect_err("bad yaml");
    assert!(!err.is_empty());
}

#[test]
fn scan_reads_yaml_yml_and_json_files_recursively_and_skips_hidden_and_other_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    put(root, "a.yaml", &ingress("a").yaml());
    put(root, "sub/b.yml", &ingress("b").yaml());
    put(
        root,
        "c.json",
        r#"{"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "c"}, "spec": {}}"#,
    );
    put(root, "notes.txt", &ingress("txt").yaml());
    put(root, ".hidden.yaml", &ingress("hidden").yaml());
    put(root, "..data/d.yaml", &ingress("configmap-internal").yaml());
    let mut dir = unsettled(root);
    let report = dir.scan().expect("scan");
    assert!(report.changed && report.errors.is_empty(), "{report:?}");
    assert_eq!(ingress_keys(&dir), ["default/a", "default/b", "default/c"]);
}

#[test]
fn unchanged_directory_reports_no_change() {
    let tmp = tempfile::tempdir().expect("tempdir");
    put(tmp.path(), "a.yaml", &ingress("a").yaml());
    let mut dir = unsettled(tmp.path());
    assert!(dir.scan().expect("scan").changed);
    let again = dir.scan().expect("scan");
    assert!(!again.changed && again.errors.is_empty(), "{again:?}");
}

#[test]
fn changed_file_replaces_its_objects() {
    let tmp = tempfile::tempdir().expect("tempdir");
    put(tmp.path(), "a.yaml", &ingress("one").yaml());
    let mut dir = unsettled(tmp.path());
    dir.scan().expect("scan");
    put(tmp.path(), "a.yaml", &ingress("two").yaml());
    assert!(dir.scan().expect("scan").changed);
    assert_eq!(ingress_keys(&dir), ["default/two"]);
}

#[test]
fn broken_file_keeps_its_last_good_objects_and_is_reported_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    put(tmp.path(), "a.yaml", &ingress("good").yaml());
    put(tmp.path(), "other.yaml", &ingress("other").yaml());
    let mut dir = unsettled(tmp.path());
    dir.scan().expect("scan");

    put(
        tmp.path(),
        "a.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: good}\nspec: {rules: 7}\n",
    );
    let report = dir.scan().expect("scan");
    assert!(!report.changed, "{report:?}");
    let [(file, reason)] = &report.errors[..] else {
        panic!("one error expected: {report:?}");
    };
    assert_eq!(file, &tmp.path().join("a.yaml"));
    assert!(reason.contains("Ingress \"good\""), "{reason}");
    assert_eq!(ingress_keys(&dir), ["default/good", "default/other"]);

    // Nothing new: the same broken content is not reported again, and stays a warning.
    assert!(dir.scan().expect("scan").errors.is_empty());
    let warnings = dir.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].to_string().starts_with(&format!(
            "File {}: document 1: Ingress \"good\"",
            file.display()
        )),
        "{}",
        warnings[0]
    );

    put(tmp.path(), "a.yaml", &ingress("fixed").yaml());
    let report = dir.scan().expect("scan");
    assert!(report.changed && report.errors.is_empty(), "{report:?}");
    assert_eq!(ingress_keys(&dir), ["default/fixed", "default/other"]);
}

#[test]
fn file_broken_from_the_start_contributes_nothing_and_others_load() {
    let tmp = tempfile::tempdir().expect("tempdir");
    put(tmp.path(), "bad.yaml", "kind: [\n");
    put(tmp.path(), "good.yaml", &ingress("good").yaml());
    let mut dir = unsettled(tmp.path());
    let report = dir.scan().expect("scan");
    assert_eq!(report.errors.len(), 1, "{report:?}");
    assert_eq!(ingress_keys(&dir), ["default/good"]);
}

#[test]
fn removed_file_drops_its_objects() {
    let tmp = tempfile::tempdir().expect("tempdir");
    put(tmp.path(), "a.yaml", &ingress("a").yaml());
    put(tmp.path(), "b.yaml", &ingress("b").yaml());
    let mut dir = unsettled(tmp.path());
    dir.scan().expect("scan");
    std::fs::remove_file(tmp.path().join("a.yaml")).expect("remove");
    assert!(dir.scan().expect("scan").changed);
    assert_eq!(ingress_keys(&dir), ["default/b"]);
}

#[test]
fn same_object_in_two_files_is_taken_from_the_later_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    put(
        tmp.path(),
        "a.yaml",
        &ingress("web")
            .prefix("first.test", "/", svc("x", 80))
            .yaml(),
    );
    put(
        tmp.path(),
        "b.yaml",
        &ingress("web")
            .prefix("second.test", "/", svc("x", 80))
            .yaml(),
    );
    let mut dir = unsettled(tmp.path());
    dir.scan().expect("scan");
    let objects = dir.objects();
    let web = &objects.ingresses[&ObjectKey::new("default", "web")];
    let host = web
        .spec
        .as_ref()
        .and_then(|s| s.rules.as_ref())
        .and_then(|r| r[0].host.clone());
    assert_eq!(host.as_deref(), Some("second.test"));
}

#[test]
fn changed_file_is_read_once_it_has_held_for_the_settle_window() {
    let tmp = tempfile::tempdir().expect("tempdir");
    put(tmp.path(), "a.yaml", &ingress("one").yaml());
    let mut dir = ManifestDir::new(tmp.path());
    let t0 = Instant::now();
    // The first scan reads at once: there is nothing to protect yet.
    assert!(dir.scan_at(t0).expect("scan").changed);

    put(tmp.path(), "a.yaml", &ingress("two").yaml());
    let t1 = t0 + Duration::from_secs(1);
    assert!(!dir.scan_at(t1).expect("scan").changed);
    assert!(!dir.scan_at(t1 + SETTLE / 2).expect("scan").changed);
    assert_eq!(ingress_keys(&dir), ["default/one"]);
    assert!(dir.scan_at(t1 + SETTLE).expect("scan").changed);
    assert_eq!(ingress_keys(&dir), ["default/two"]);
}

#[test]
fn file_still_being_written_is_not_read_until_it_stops_changing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("a.yaml");
    std::fs::write(&path, ingress("old").yaml()).expect("write");
    let mut dir = ManifestDir::new(tmp.path());
    let t0 = Instant::now();
    dir.scan_at(t0).expect("scan");

    // Written in two parts; the first part alone is a valid, different Ingress.
    let whole = ingress("new")
        .prefix("a.test", "/", svc("web", 80))
        .prefix("b.test", "/", svc("web", 80))
        .yaml();
    let cut = whole.find("b.test").expect("second rule") - 1;
    std::fs::write(&path, &whole[..cut]).expect("write part");
    let t1 = t0 + Duration::from_secs(1);
    assert!(!dir.scan_at(t1).expect("scan").changed);
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open");
    file.write_all(&whole.as_bytes()[cut..])
        .expect("write rest");
    drop(file);
    // The size changed within the window: the window starts again.
    assert!(!dir.scan_at(t1 + SETTLE).expect("scan").changed);
    assert_eq!(ingress_keys(&dir), ["default/old"]);
    assert!(dir.scan_at(t1 + SETTLE * 2).expect("scan").changed);
    assert_eq!(ingress_keys(&dir), ["default/new"]);
    let hosts: Vec<_> = dir.objects().ingresses[&ObjectKey::new("default", "new")]
        .spec
        .as_ref()
        .and_then(|s| s.rules.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|r| r.host.clone())
        .collect();
    assert_eq!(hosts, ["a.test", "b.test"]);
}

#[test]
fn emptied_file_keeps_its_last_good_objects_with_a_warning() {
    let tmp = tempfile::tempdir().expect("tempdir");
    put(tmp.path(), "a.yaml", &ingress("a").yaml());
    put(tmp.path(), "b.yaml", &ingress("b").yaml());
    let mut dir = unsettled(tmp.path());
    dir.scan().expect("scan");

    for empty in ["", "\n", "# nothing yet\n---\n"] {
        std::fs::write(tmp.path().join("a.yaml"), empty).expect("truncate");
        let report = dir.scan().expect("scan");
        assert!(!report.changed, "{empty:?}: {report:?}");
        assert_eq!(ingress_keys(&dir), ["default/a", "default/b"], "{empty:?}");
        let warnings = dir.warnings();
        let [warning] = &warnings[..] else {
            panic!("one warning expected: {warnings:?}");
        };
        assert_eq!(warning.kind, "File");
        assert_eq!(
            warning.object.name,
            tmp.path().join("a.yaml").display().to_string()
        );
        assert_eq!(warning.reason, EMPTIED);
    }

    // Filled again: the new objects, no warning.
    std::fs::write(tmp.path().join("a.yaml"), ingress("c").yaml()).expect("write");
    let report = dir.scan().expect("scan");
    assert!(report.changed && report.problems_changed, "{report:?}");
    assert_eq!(report.resolved, [tmp.path().join("a.yaml")]);
    assert_eq!(ingress_keys(&dir), ["default/b", "default/c"]);
    assert!(dir.warnings().is_empty());

    // Deleting the file is how its objects are removed.
    std::fs::remove_file(tmp.path().join("a.yaml")).expect("remove");
    assert!(dir.scan().expect("scan").changed);
    assert_eq!(ingress_keys(&dir), ["default/b"]);
}

#[test]
fn new_empty_file_is_no_problem() {
    let tmp = tempfile::tempdir().expect("tempdir");
    put(tmp.path(), "a.yaml", &ingress("a").yaml());
    put(tmp.path(), "placeholder.yaml", "# filled later\n");
    let mut dir = unsettled(tmp.path());
    let report = dir.scan().expect("scan");
    assert!(report.errors.is_empty() && dir.warnings().is_empty());
    assert_eq!(ingress_keys(&dir), ["default/a"]);
}

#[test]
fn removed_file_keeps_its_objects_for_the_settle_window() {
    let tmp = tempfile::tempdir().expect("tempdir");
    put(tmp.path(), "a.yaml", &ingress("a").yaml());
    let mut dir = ManifestDir::new(tmp.path());
    let t0 = Instant::now();
    dir.scan_at(t0).expect("scan");
    // An editor saving by rename-and-rewrite leaves a moment with no file.
    std::fs::remove_file(tmp.path().join("a.yaml")).expect("remove");
    assert!(!dir.scan_at(t0 + SETTLE).expect("scan").changed);
    assert_eq!(ingress_keys(&dir), ["default/a"]);
    assert!(dir.scan_at(t0 + SETTLE * 2).expect("scan").changed);
    assert!(ingress_keys(&dir).is_empty());
}

#[test]
fn deleted_directory_keeps_every_object_and_is_reported_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("manifests");
    put(&root, "a.yaml", &ingress("a").yaml());
    let mut dir = unsettled(&root);
    dir.scan().expect("scan");

    std::fs::remove_dir_all(&root).expect("rm -r");
    let report = dir.scan().expect("a scan after the first does not fail");
    assert!(!report.changed && report.problems_changed, "{report:?}");
    let [(path, reason)] = &report.errors[..] else {
        panic!("one error expected: {report:?}");
    };
    assert_eq!(path, &root);
    assert!(reason.contains("No such file"), "{reason}");
    assert_eq!(ingress_keys(&dir), ["default/a"]);
    assert_eq!(dir.warnings().len(), 1);
    for _ in 0..3 {
        let again = dir.scan().expect("scan");
        assert!(again.errors.is_empty() && !again.problems_changed && !again.changed);
    }

    put(&root, "a.yaml", &ingress("a2").yaml());
    let back = dir.scan().expect("scan");
    assert!(back.changed && back.resolved == [root.clone()], "{back:?}");
    assert_eq!(ingress_keys(&dir), ["default/a2"]);
    assert!(dir.warnings().is_empty());
}

#[test]
fn missing_directory_is_an_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut dir = unsettled(tmp.path().join("nope"));
    assert!(dir.scan().is_err());
}

#[test]
fn file_with_thousands_of_documents_parses() {
    // Generated manifests can be big: YAML limits guard each document, not the file's length.
    let services: Vec<String> = (0..3000)
        .map(|i| service("default", &format!("web-{i}"), &[("http", 80)]))
        .collect();
    let objects = parse_documents(&docs(&services)).expect("parses");
    assert_eq!(objects.len(), 3000);
}

#[test]
fn yaml_alias_bomb_is_refused() {
    let mut text = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: bomb}\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n",
    );
    for i in 1..10 {
        let prev = i - 1;
        text.push_str(&format!(
            "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
        ));
    }
    assert!(parse_documents(&text).is_err());
}

#[test]
fn a_changed_document_gets_a_new_object_and_the_others_keep_theirs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let one = |backend: &str| {
        docs(&[
            service("default", "a", &[("http", 80)]),
            ingress("web")
                .prefix("a.test", "/", svc(backend, 80))
                .yaml(),
            ingress("other").prefix("b.test", "/", svc("a", 80)).yaml(),
        ])
    };
    put(tmp.path(), "all.yaml", &one("a"));
    let mut dir = unsettled(tmp.path());
    dir.scan().expect("scan");
    let before = dir.objects().clone();
    put(tmp.path(), "all.yaml", &one("b"));
    assert!(dir.scan().expect("scan").changed);
    let after = dir.objects();
    let key = |name: &str| ObjectKey::new("default", name);
    assert!(!Arc::ptr_eq(
        &before.ingresses[&key("web")],
        &after.ingresses[&key("web")]
    ));
    assert!(Arc::ptr_eq(
        &before.ingresses[&key("other")],
        &after.ingresses[&key("other")]
    ));
    assert!(Arc::ptr_eq(
        &before.services[&key("a")],
        &after.services[&key("a")]
    ));
}

#[test]
fn rewriting_a_file_with_the_same_objects_is_no_change() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let text = ingress("web").prefix("a.test", "/", svc("a", 80)).yaml();
    put(tmp.path(), "a.yaml", &text);
    let mut dir = unsettled(tmp.path());
    assert!(dir.scan().expect("scan").changed);
    put(tmp.path(), "a.yaml", &format!("{text}---\n# a comment\n"));
    let report = dir.scan().expect("scan");
    assert!(!report.changed && report.errors.is_empty(), "{report:?}");
}

/// Every object of a directory, as text, to compare two scans.
fn dump(objects: &Objects) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |kind: &str, key: &ObjectKey, value: serde_json::Result<serde_json::Value>| {
        out.push(format!("{kind} {key} {}", value.expect("serializable")));
    };
    for (k, o) in &objects.ingresses {
        add("Ingress", k, serde_json::to_value(&**o));
    }
    for (k, o) in &objects.services {
        add("Service", k, serde_json::to_value(&**o));
    }
    for (k, o) in &objects.endpoint_slices {
        add("EndpointSlice", k, serde_json::to_value(&**o));
    }
    for (k, o) in &objects.secrets {
        add("Secret", k, serde_json::to_value(&**o));
    }
    out
}

/// The objects of a directory by the rule itself: every file in path order, each object
/// replacing an earlier one of the same key, then the overlay's Secrets over them.
fn reference(main: &Path, overlay: &Path) -> Objects {
    let read = |dir: &Path| {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        paths.sort();
        let mut objects = Objects::default();
        for path in paths {
            let text = std::fs::read_to_string(&path).expect("read");
            for object in parse_documents(&text).expect("good file") {
                objects.insert(object);
            }
        }
        objects
    };
    let mut objects = read(main);
    objects.secrets.extend(read(overlay).secrets);
    objects
}

#[test]
fn objects_kept_up_to_date_follow_the_file_order_rule_over_random_edits() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (main, overlay) = (tmp.path().join("main"), tmp.path().join("overlay"));
    std::fs::create_dir_all(&main).expect("mkdir");
    std::fs::create_dir_all(&overlay).expect("mkdir");
    let secret = |name: &str, value: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\nstringData: {{v: {value}}}\n"
        )
    };
    let mut dir = unsettled(&main).with_secrets_from(&overlay);
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    for step in 0..150 {
        let (folder, file) = if next(4) == 0 {
            (&overlay, format!("s{}.yaml", next(2)))
        } else {
            (&main, format!("f{}.yaml", next(3)))
        };
        if next(6) == 0 {
            let _ = std::fs::remove_file(folder.join(&file));
        } else {
            // The same few names in every file: later files (and the overlay) win.
            let mut parts = Vec::new();
            for _ in 0..1 + next(4) {
                let n = next(3);
                parts.push(match next(4) {
                    0 => service(
                        "default",
                        &format!("s{n}"),
                        &[("http", 80 + next(3) as u16)],
                    ),
                    1 => secret(&format!("t{n}"), &format!("v{}", next(5))),
                    2 => endpoint_slice("default", &format!("e{n}"), "s0", &[("http", 80)], &[]),
                    _ => ingress(&format!("i{n}"))
                        .prefix("a.test", &format!("/{}", next(3)), svc("s0", 80))
                        .yaml(),
                });
            }
            if next(8) == 0 {
                parts.push("apiVersion: v1\nkind: Service\nmetadata: [broken\n".into());
            }
            put(folder, &file, &docs(&parts));
        }
        dir.scan().expect("scan");
        // A broken file keeps its last good objects, which a fresh scan never saw: compare
        // only when every file is good.
        let broken = |d: &Path| {
            std::fs::read_dir(d).expect("dir").any(|e| {
                let text = std::fs::read_to_string(e.expect("entry").path()).unwrap_or_default();
                text.contains("[broken")
            })
        };
        if !broken(&main) && !broken(&overlay) {
            assert_eq!(
                dump(dir.objects()),
                dump(&reference(&main, &overlay)),
                "step {step}"
            );
        }
    }
}
