//! `gatehouse check`: the migration report. Reads Ingresses (and the Secrets they name, if
//! given) from manifest files, directories or standard input, parses their annotations exactly
//! as the gateway does, and prints per Ingress and annotation whether it is honoured, ignored
//! or refused, and why.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use gatehouse::config::{CheckArgs, LogFormat};
use gatehouse::objects::{Object, ObjectKey};
use gatehouse::translate::annotations::{self, Context, Defaults, Status};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use serde::Serialize;

/// The report on one Ingress.
#[derive(Serialize)]
struct IngressReport {
    ingress: String,
    class: Option<String>,
    /// `served`, `refused` (its routes answer 503) or `rejected` (not served at all).
    verdict: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    annotations: Vec<AnnotationReport>,
    /// Warnings that are not about one annotation.
    warnings: Vec<String>,
}

#[derive(Serialize)]
struct AnnotationReport {
    annotation: String,
    value: Option<String>,
    outcome: Status,
    reason: String,
}

/// Runs the subcommand; exit code 0 when nothing would be refused, 1 otherwise, 2 when the
/// input cannot be read.
pub fn run(args: &CheckArgs) -> ExitCode {
    let mut objects = Vec::new();
    for path in &args.paths {
        match read(path) {
            Ok(mut more) => objects.append(&mut more),
            Err(e) => {
                eprintln!("gatehouse check: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let mut ingresses: BTreeMap<ObjectKey, Arc<Ingress>> = BTreeMap::new();
    let mut secrets: BTreeMap<ObjectKey, Arc<Secret>> = BTreeMap::new();
    for object in objects {
        let key = object.key();
        match object {
            Object::Ingress(i) => {
                ingresses.insert(key, i);
            }
            Object::Secret(s) => {
                secrets.insert(key, s);
            }
            _ => {}
        }
    }
    let reports: Vec<IngressReport> = ingresses
        .iter()
        .map(|(key, ingress)| report(key, ingress, &secrets, &args.ingress_class_compat))
        .collect();
    let bad = reports.iter().filter(|r| r.verdict != "served").count();
    match args.format {
        LogFormat::Json => {
            let count = |s: Status| {
                reports
                    .iter()
                    .flat_map(|r| &r.annotations)
                    .filter(|a| a.outcome == s)
                    .count()
            };
            let body = serde_json::json!({
                "ingresses": reports,
                "summary": {
                    "ingresses": reports.len(),
                    "notServed": bad,
                    "honoured": count(Status::Honoured),
                    "ignored": count(Status::Ignored),
                    "refused": count(Status::Refused),
                },
            });
            println!("{body:#}");
        }
        LogFormat::Text => print!("{}", text(&reports, secrets.is_empty())),
    }
    if bad > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Objects from a file, a directory (recursively) or `-` (standard input).
fn read(path: &Path) -> Result<Vec<Object>, String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("standard input: {e}"))?;
        return gatehouse::sources::manifests::parse_documents(&text)
            .map_err(|e| format!("standard input: {e}"));
    }
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut files = Vec::new();
    if meta.is_dir() {
        list(path, &mut files).map_err(|e| format!("{}: {e}", path.display()))?;
    } else {
        files.push(path.to_owned());
    }
    let mut out = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let mut objects = gatehouse::sources::manifests::parse_documents(&text)
            .map_err(|e| format!("{}: {e}", file.display()))?;
        out.append(&mut objects);
    }
    Ok(out)
}

fn list(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for path in entries {
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            list(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

fn report(
    key: &ObjectKey,
    ingress: &Ingress,
    secrets: &BTreeMap<ObjectKey, Arc<Secret>>,
    compat: &[String],
) -> IngressReport {
    let class = ingress
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.clone())
        .or_else(|| {
            let annotations = ingress.metadata.annotations.as_ref();
            annotations.and_then(|a| a.get("kubernetes.io/ingress.class").cloned())
        });
    let defaults = match &class {
        Some(c) if compat.contains(c) => annotations::NGINX_DEFAULTS,
        _ => Defaults::default(),
    };
    let parsed = annotations::parse(
        ingress,
        &Context {
            key,
            secrets,
            defaults,
        },
    );
    let values = ingress.metadata.annotations.clone().unwrap_or_default();
    let annotations: Vec<AnnotationReport> = parsed
        .reports
        .iter()
        .map(|r| AnnotationReport {
            annotation: r.annotation.clone(),
            value: values.get(&r.annotation).cloned(),
            outcome: r.outcome,
            reason: r.reason.clone(),
        })
        .collect();
    // Warnings the table rows do not already say (Secret lines left out, old API versions).
    let warnings = parsed
        .warnings
        .iter()
        .filter(|w| !w.starts_with("annotation ") || w.contains("left out"))
        .cloned()
        .collect();
    let (verdict, reason) = match (&parsed.rejected, parsed.refused()) {
        (Some(r), _) => ("rejected", Some(r.clone())),
        (None, Some(r)) => ("refused", Some(r.to_owned())),
        (None, None) => ("served", None),
    };
    IngressReport {
        ingress: key.to_string(),
        class,
        verdict,
        reason,
        annotations,
        warnings,
    }
}

/// The human-readable report.
fn text(reports: &[IngressReport], no_secrets: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for r in reports {
        let class = r.class.as_deref().unwrap_or("(none)");
        let verdict = match r.verdict {
            "served" => "served".to_owned(),
            "refused" => "REFUSED: its routes would answer 503".to_owned(),
            _ => "REJECTED: not served at all".to_owned(),
        };
        let _ = writeln!(out, "Ingress {} (class {class}): {verdict}", r.ingress);
        let width = r
            .annotations
            .iter()
            .map(|a| a.annotation.len())
            .max()
            .unwrap_or(0);
        for a in &r.annotations {
            let _ = writeln!(
                out,
                "  {:<8}  {:<width$}  {}",
                a.outcome.as_str(),
                a.annotation,
                a.reason
            );
        }
        for w in &r.warnings {
            let _ = writeln!(out, "  warning   {w}");
        }
        if let Some(reason) = r.reason.as_deref().filter(|_| r.verdict == "rejected") {
            let _ = writeln!(out, "  {reason}");
        }
    }
    let refused = reports.iter().filter(|r| r.verdict != "served").count();
    let count = |s: Status| {
        reports
            .iter()
            .flat_map(|r| &r.annotations)
            .filter(|a| a.outcome == s)
            .count()
    };
    let _ = writeln!(
        out,
        "\n{} Ingresses: {} served, {} not served. Annotations: {} honoured, {} ignored, {} refused.",
        reports.len(),
        reports.len() - refused,
        refused,
        count(Status::Honoured),
        count(Status::Ignored),
        count(Status::Refused),
    );
    if no_secrets
        && reports.iter().any(|r| {
            r.annotations
                .iter()
                .any(|a| a.annotation.ends_with("/auth-secret"))
        })
    {
        out.push_str("Note: the input has no Secrets, so auth-secret annotations were checked against none; add the Secrets they name to check them.\n");
    }
    out
}
