use super::*;
use crate::snapshot::policy::Htpasswd;

/// `correct horse`, bcrypt cost 4 (Python's bcrypt).
const USERS: &str = "editor:$2b$04$qkTwWGYILDUcj1sb6j/QAOQ76eXqHMtbcvX90Q9NDuljovy9QjNn6\n";

fn auth() -> Arc<BasicAuth> {
    let (users, _) = Htpasswd::parse_file(USERS);
    Arc::new(BasicAuth {
        challenge: HeaderValue::from_static("Basic realm=\"t\""),
        users,
    })
}

fn request(authorization: &str) -> Request<()> {
    Request::builder()
        .header(header::AUTHORIZATION, authorization)
        .body(())
        .unwrap()
}

// "editor:correct horse" and "editor:wrong".
const GOOD: &str = "Basic ZWRpdG9yOmNvcnJlY3QgaG9yc2U=";
const BAD: &str = "Basic ZWRpdG9yOndyb25n";

#[tokio::test]
async fn a_verified_password_is_remembered_per_route_and_a_wrong_one_never() {
    let state = State::default();
    let (route_a, route_b) = (auth(), auth());
    let good = HeaderValue::from_static(GOOD);
    assert!(!state.cached(&route_a, &good));
    assert!(check_basic(&state, &route_a, &request(GOOD)).await.is_ok());
    assert!(state.cached(&route_a, &good), "success not remembered");
    assert!(
        !state.cached(&route_b, &good),
        "another route's users must verify for themselves"
    );
    let err = check_basic(&state, &route_a, &request(BAD))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unauthorized);
    assert!(!state.cached(&route_a, &HeaderValue::from_static(BAD)));
    let resp = err.response();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Basic realm=\"t\"");
}

#[test]
fn the_cache_stays_bounded() {
    let state = State::default();
    let route = auth();
    for i in 0..AUTH_CACHE_ENTRIES + 10 {
        let v = HeaderValue::from_str(&format!("Basic {i}")).unwrap();
        state.remember(&route, &v);
    }
    let len = state.auth_ok.lock().unwrap().len();
    assert!(len <= AUTH_CACHE_ENTRIES, "{len} entries");
}
