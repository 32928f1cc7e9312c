//! Old Ingress API versions read from manifests.

use k8s_openapi::api::networking::v1::Ingress;
use serde_json::json;

use super::*;

#[test]
fn v1beta1_backends_become_v1_service_backends() {
    let old = json!({
        "apiVersion": "extensions/v1beta1",
        "kind": "Ingress",
        "metadata": {"name": "kube-lego-era", "namespace": "web"},
        "spec": {
            "backend": {"serviceName": "fallback", "servicePort": 80},
            "rules": [{"host": "a.test", "http": {"paths": [
                {"path": "/", "backend": {"serviceName": "app", "servicePort": "http"}},
                {"path": "/api", "pathType": "Prefix", "backend": {"serviceName": "api", "servicePort": "8080"}},
            ]}}],
        },
    });
    let new = ingress_from_v1beta1(old).unwrap();
    let ingress: Ingress = serde_json::from_value(new).expect("a valid v1 Ingress");
    let spec = ingress.spec.unwrap();
    let default = spec.default_backend.unwrap().service.unwrap();
    assert_eq!(
        (default.name.as_str(), default.port.unwrap().number),
        ("fallback", Some(80))
    );
    let rules = spec.rules.unwrap();
    let paths = &rules[0].http.as_ref().unwrap().paths;
    assert_eq!(paths[0].path_type, "ImplementationSpecific");
    let app = paths[0].backend.service.as_ref().unwrap();
    assert_eq!(app.port.as_ref().unwrap().name.as_deref(), Some("http"));
    let api = paths[1].backend.service.as_ref().unwrap();
    assert_eq!(
        (
            api.port.as_ref().unwrap().number,
            paths[1].path_type.as_str()
        ),
        (Some(8080), "Prefix")
    );
    let annotations = ingress.metadata.annotations.unwrap();
    assert_eq!(
        annotations["gatehouse.dev/converted-from"],
        "extensions/v1beta1"
    );
}

#[test]
fn v1beta1_resource_backends_are_kept_and_broken_ones_say_where() {
    let old = json!({
        "apiVersion": "networking.k8s.io/v1beta1",
        "kind": "Ingress",
        "metadata": {"name": "x", "annotations": {"a": "b"}},
        "spec": {"rules": [{"http": {"paths": [
            {"path": "/s", "backend": {"resource": {"apiGroup": "gatehouse.dev", "kind": "StaticSite", "name": "s"}}},
        ]}}]},
    });
    let new = ingress_from_v1beta1(old).unwrap();
    assert_eq!(new["metadata"]["annotations"]["a"], "b");
    assert_eq!(
        new["spec"]["rules"][0]["http"]["paths"][0]["backend"]["resource"]["name"],
        "s"
    );
    let broken = json!({
        "apiVersion": "extensions/v1beta1",
        "kind": "Ingress",
        "metadata": {"name": "x"},
        "spec": {"rules": [{"http": {"paths": [{"path": "/", "backend": {"serviceName": "only-name"}}]}}]},
    });
    assert_eq!(
        ingress_from_v1beta1(broken).unwrap_err(),
        "Ingress \"x\": spec.rules[0].http.paths[0].backend needs both serviceName and servicePort"
    );
}
