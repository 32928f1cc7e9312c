//! StaticSite backends over real sockets: index and fallback files, caching headers, ranges,
//! precompressed files, MIME types, and path traversal attempts that must all fail.
mod support;

use std::path::PathBuf;

use reqwest::StatusCode;
use support::yaml::{docs, ingress, site, static_site};
use support::{Gatehouse, raw_get};

const SECRET: &str = "TOP SECRET, outside the site";

/// A site directory (`DIR/site`) beside a secret file (`DIR/secret.txt`) it must never serve.
struct SiteDir {
    tmp: tempfile::TempDir,
}

impl SiteDir {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = Self { tmp };
        std::fs::write(s.tmp.path().join("secret.txt"), SECRET).expect("secret");
        for (name, body) in [
            ("index.html", "<h1>home</h1>"),
            ("app.css", "body { color: red }"),
            ("app.js", "console.log(1)"),
            ("data.json", "{\"a\": 1}"),
            ("logo.svg", "<svg/>"),
            ("module.wasm", "\0asm"),
            ("home.html", "<h1>custom home</h1>"),
            ("docs/index.html", "<h1>docs</h1>"),
            ("docs/home.html", "<h1>docs custom home</h1>"),
            ("nodocs/readme.txt", "no index here"),
            ("style.css", "plain css"),
            ("style.css.gz", "GZIP BYTES"),
            ("style.css.br", "BROTLI BYTES"),
            ("only-gz.js", "plain js"),
            ("only-gz.js.gz", "GZIP JS"),
        ] {
            s.put(name, body.as_bytes());
        }
        let digits: String = (0..1000)
            .map(|i| char::from(b'0' + (i % 10) as u8))
            .collect();
        s.put("digits.txt", digits.as_bytes());
        std::os::unix::fs::symlink(s.tmp.path().join("secret.txt"), s.root().join("leak.txt"))
            .expect("symlink out");
        std::os::unix::fs::symlink(s.tmp.path(), s.root().join("parent")).expect("dir symlink out");
        std::os::unix::fs::symlink("app.css", s.root().join("alias.css")).expect("symlink in");
        s
    }

    fn root(&self) -> PathBuf {
        self.tmp.path().join("site")
    }

    fn secret_path(&self) -> PathBuf {
        self.tmp.path().join("secret.txt")
    }

    fn put(&self, name: &str, body: &[u8]) {
        let path = self.root().join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, body).expect("write");
    }
}

/// Gatehouse serving one site directory as three StaticSites:
/// `site.test` (plain, also under `/static`), `spa.test` (fallback `index.html`) and
/// `custom.test` (index `home.html`, `Cache-Control`).
fn serve(dir: &SiteDir) -> Gatehouse {
    let root = dir.root();
    let root = root.to_str().expect("utf-8 path");
    let yaml = docs(&[
        static_site("default", "plain", root, &[]),
        static_site("default", "spa", root, &[("fallback", "index.html")]),
        static_site(
            "default",
            "custom",
            root,
            &[
                ("index", "home.html"),
                ("cacheControl", "public, max-age=60"),
            ],
        ),
        ingress("sites")
            .prefix("site.test", "/", site("plain"))
            .prefix("site.test", "/static", site("plain"))
            .exact("site.test", "/exact/app.css", site("plain"))
            .prefix("spa.test", "/", site("spa"))
            .prefix("custom.test", "/", site("custom"))
            .yaml(),
    ]);
    Gatehouse::start(&yaml)
}

fn client(gh: &Gatehouse) -> reqwest::Client {
    gh.client_for(&["site.test", "spa.test", "custom.test"])
}

async fn get(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let mut req = client.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let (status, headers) = (resp.status(), resp.headers().clone());
    (status, headers, resp.text().await.expect("body"))
}

/// A file sent whole over HTTP/1.1 is a success in the metrics, not a client gone mid-body
/// (hyper stops reading a body once it has sent the declared length).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_sent_whole_is_not_counted_as_a_client_gone() {
    let dir = SiteDir::new();
    let gh = serve(&dir);
    let c = client(&gh);
    for _ in 0..3 {
        let (status, _, body) = get(&c, "http://site.test/", &[]).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "<h1>home</h1>"));
    }
    let gone = gh.metric("gatehouse_proxy_errors_total", &["reason=\"client_gone\""]);
    assert_eq!(gone, 0.0, "whole responses counted as client_gone");
    let ok = gh.metric("gatehouse_requests_total", &["status=\"200\""]);
    assert!(ok >= 3.0, "requests_total 200: {ok}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_file_is_served_for_the_root_and_for_directories() {
    let dir = SiteDir::new();
    let gh = serve(&dir);
    let c = client(&gh);
    let (status, headers, body) = get(&c, "http://site.test/", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "<h1>home</h1>"));
    assert_eq!(headers["content-type"], "text/html");
    assert_eq!(
        get(&c, "http://site.test/docs/", &[]).await.2,
        "<h1>docs</h1>"
    );
    // A directory without its slash is redirected to it, as a browser needs for relative links.
    let (status, headers, _) = get(&c, "http://site.test/docs", &[]).await;
    assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(headers["location"], "/docs/");
    // A directory without an index file is not listed.
    assert_eq!(
        get(&c, "http://site.test/nodocs/", &[]).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&c, "http://site.test/missing.html", &[]).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_index_file_replaces_index_html() {
    let dir = SiteDir::new();
    let gh = serve(&dir);
    let c = client(&gh);
    assert_eq!(
        get(&c, "http://custom.test/", &[]).await.2,
        "<h1>custom home</h1>"
    );
    assert_eq!(
        get(&c, "http://custom.test/docs/", &[]).await.2,
        "<h1>docs custom home</h1>"
    );
    let (status, headers, _) = get(&c, "http://custom.test/docs", &[]).await;
    assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(headers["location"], "/docs/");
    assert_eq!(
        get(&c, "http://custom.test/app.css", &[]).await.2,
        "body { color: red }"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_page_app_fallback_answers_unknown_paths_with_200() {
    let dir = SiteDir::new();
    let gh = serve(&dir);
    let c = client(&gh);
    for path in ["/users/42/settings", "/missing.js", "/nodocs/"] {
        let (status, headers, body) = get(&c, &format!("http://spa.test{path}"), &[]).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "<h1>home</h1>"),
            "{path}"
        );
        assert_eq!(headers["content-type"], "text/html", "{path}");
    }
    // Real files are still themselves.
    assert_eq!(
        get(&c, "http://spa.test/app.css", &[]).await.2,
        "body { color: red }"
    );
    assert_eq!(
        get(&c, "http://spa.test/docs/", &[]).await.2,
        "<h1>docs</h1>"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_route_serves_files_relative_to_its_path() {
    let dir = SiteDir::new();
    let gh = serve(&dir);
    let c = client(&gh);
    assert_eq!(
        get(&c, "http://site.test/static/app.css", &[]).await.2,
        "body { color: red }"
    );
    assert_eq!(
        get(&c, "http://site.test/static/docs/", &[]).await.2,
        "<h1>docs</h1>"
    );
    assert_eq!(
        get(&c, "http://site.test/static/", &[]).await.2,
        "<h1>home</h1>"
    );
    // The route's own path without its slash: redirected, so relative links resolve under it.
    let (status, headers, _) = get(&c, "http://site.test/static?v=1", &[]).await;
    assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(headers["location"], "/static/?v=1");
    let (status, headers, _) = get(&c, "http://site.test/static/docs", &[]).await;
    assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(headers["location"], "/static/docs/");
    // Not the prefix element by element: served from the site root instead, where it is missing.
    assert_eq!(
        get(&c, "http://site.test/staticx/app.css", &[]).await.0,
        StatusCode::NOT_FOUND
    );
    // An Exact route serves the file at its full path.
    assert_eq!(
        get(&c, "http://site.test/exact/app.css", &[]).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validators_give_304_and_ranges_give_206() {
    let dir = SiteDir::new();
    let gh = serve(&dir);
    let c = client(&gh);
    let (status, headers, body) = get(&c, "http://site.test/digits.txt", &[]).await;
    assert_eq!((status, body.len()), (StatusCode::OK, 1000));
    assert_eq!(headers["accept-ranges"], "bytes");
    let etag = headers["etag"].to_str().unwrap().to_owned();
    let last_modified = headers["last-modified"].to_str().unwrap().to_owned();

    let (status, headers, body) = get(
        &c,
        "http://site.test/digits.txt",
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::NOT_MODIFIED, ""));
    assert_eq!(headers["etag"], etag.as_str());
    let (status, _, _) = get(
        &c,
        "http://site.test/digits.txt",
        &[("if-none-match", "\"other\"")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = get(
        &c,
        "http://site.test/digits.txt",
        &[("if-modified-since", &last_modified)],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);

    let (status, headers, body) = get(
        &c,
        "http://site.test/digits.txt",
        &[("range", "bytes=10-19")],
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::PARTIAL_CONTENT, "0123456789")
    );
    assert_eq!(headers["content-range"], "bytes 10-19/1000");
    let (status, _, body) = get(&c, "http://site.test/digits.txt", &[("range", "bytes=-3")]).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::PARTIAL_CONTENT, "789")
    );
    let (status, _, _) = get(
        &c,
        "http://site.test/digits.txt",
        &[("range", "bytes=5000-")],
    )
    .await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precompressed_sibling_is_chosen_by_accept_encoding() {
    let dir = SiteDir::new();
    let gh = serve(&dir);
    let c = client(&gh);
    let cases = [
        ("br, gzip", "BROTLI BYTES", Some("br")),
        ("gzip", "GZIP BYTES", Some("gzip")),
        ("identity", "plain css", None),
    ];
    for (accept, body, encoding) in cases {
        let (status, headers, got) = get(
            &c,
            "http://site.test/style.css",
            &[("accept-encoding", accept)],
        )
        .await;
        assert_eq!((status, got.as_str()), (StatusCode::OK, body), "{accept}");
        assert_eq!(
            headers.get("content-encoding").map(|v| v.to_str().unwrap()),
            encoding,
            "{accept}"
        );
        assert_eq!(headers["content-type"], "text/css", "{accept}");
        assert_eq!(headers["vary"], "accept-encoding", "{accept}");
    }
    // No .br sibling: gzip is the next best.
    let (_, headers, got) = get(
        &c,
        "http://site.test/only-gz.js",
        &[("accept-encoding", "br, gzip")],
    )
    .await;
    assert_eq!(got, "GZIP JS");
    assert_eq!(headers["content-encoding"], "gzip");
    let (_, headers, got) = get(
        &c,
        "http://site.test/app.css",
        &[("accept-encoding", "br, gzip")],
    )
    .await;
    assert_eq!(got, "body { color: red }");
    assert!(headers.get("content-encoding").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_types_follow_file_extensions() {
    let dir = SiteDir::new();
    let gh = serve(&dir);
    let c = client(&gh);
    for (path, mime) in [
        ("/index.html", "text/html"),
        ("/app.css", "text/css"),
        ("/app.js", "javascript"),
        ("/data.json", "application/json"),
        ("/logo.svg", "image/svg+xml"),
        ("/module.wasm", "application/wasm"),
        ("/docs/", "text/html"),
    ] {
        let (status, headers, _) = get(&c, &format!("http://site.test{path}"), &[]).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let got = headers["content-type"].to_str().unwrap();
        assert!(got.contains(mime), "{path}: {got}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_control_is_set_on_successful_answers_only() {
    let dir = SiteDir::new();
    let gh = serve(&dir);
    let c = client(&gh);
    let (status, headers, _) = get(&c, "http://custom.test/app.css", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["cache-control"], "public, max-age=60");
    let etag = headers["etag"].to_str().unwrap().to_owned();
    let (status, headers, _) = get(
        &c,
        "http://custom.test/app.css",
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(headers["cache-control"], "public, max-age=60");
    let (status, headers, _) = get(&c, "http://custom.test/missing", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(headers.get("cache-control").is_none());
    // A site without cacheControl sets none.
    let (_, headers, _) = get(&c, "http://site.test/app.css", &[]).await;
    assert!(headers.get("cache-control").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_get_and_head_are_allowed() {
    let dir = SiteDir::new();
    let gh = serve(&dir);
    let c = client(&gh);
    for method in [
        reqwest::Method::POST,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let resp = c
            .request(method.clone(), "http://site.test/app.css")
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(resp.headers()["allow"], "GET, HEAD");
    }
    let resp = c.head("http://site.test/app.css").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-length"], "19");
    assert_eq!(resp.text().await.unwrap(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_traversal_attempts_never_reach_files_outside_the_root() {
    let dir = SiteDir::new();
    let gh = serve(&dir);
    let secret = dir.secret_path();
    let secret = secret.to_str().unwrap();
    let encoded_secret = secret.replace('/', "%2F");
    let attempts = [
        "/../secret.txt".to_owned(),
        "/docs/../../secret.txt".to_owned(),
        "/%2e%2e/secret.txt".to_owned(),
        "/%2E%2E/secret.txt".to_owned(),
        "/%2e%2e%2fsecret.txt".to_owned(),
        "/..%2fsecret.txt".to_owned(),
        "/..%5csecret.txt".to_owned(),
        "/..\\secret.txt".to_owned(),
        "/docs/..%5c..%5csecret.txt".to_owned(),
        "/%252e%252e/secret.txt".to_owned(),
        "/%252e%252e%252fsecret.txt".to_owned(),
        "/.%2e/secret.txt".to_owned(),
        "/static/../../secret.txt".to_owned(),
        "/static/%2e%2e/secret.txt".to_owned(),
        format!("/{secret}"),
        format!("/{encoded_secret}"),
        format!("/static/{encoded_secret}"),
        "/leak.txt".to_owned(),
        "/parent/secret.txt".to_owned(),
        "/static/leak.txt".to_owned(),
        "/%00/secret.txt".to_owned(),
        "/../../../../../../etc/passwd".to_owned(),
        "/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd".to_owned(),
    ];
    for host in ["site.test", "custom.test"] {
        for target in &attempts {
            let resp = raw_get(gh.http, host, target, &[]).await;
            let body = resp.text();
            assert!(
                resp.status == 404 || resp.status == 400,
                "{host}{target}: status {} body {body:?}",
                resp.status
            );
            assert!(
                !body.contains(SECRET) && !body.contains("root:"),
                "{host}{target}: {body}"
            );
        }
    }
    // With a fallback file, misses get the site's own fallback, never the secret.
    for target in &attempts {
        let resp = raw_get(gh.http, "spa.test", target, &[]).await;
        let body = resp.text();
        assert!(
            !body.contains(SECRET) && !body.contains("root:"),
            "spa.test{target}: {body}"
        );
    }
    // An absolute-form request target goes through the same checks.
    let resp = raw_get(gh.http, "site.test", "http://site.test/../secret.txt", &[]).await;
    assert!(!resp.text().contains(SECRET), "{resp:?}");
    gh.wait_log(
        &["resolves outside its site's root"],
        std::time::Duration::from_secs(2),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlink_pointing_inside_the_root_is_served() {
    let dir = SiteDir::new();
    let gh = serve(&dir);
    let (status, headers, body) = get(&client(&gh), "http://site.test/alias.css", &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "body { color: red }")
    );
    assert_eq!(headers["content-type"], "text/css");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_site_answers_over_http2_too() {
    let dir = SiteDir::new();
    let gh = serve(&dir);
    let resp = gh
        .h2c_client_for(&["site.test"])
        .get("http://site.test/app.css")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.text().await.unwrap(), "body { color: red }");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_requests_are_counted_under_their_site() {
    let dir = SiteDir::new();
    let gh = serve(&dir);
    let c = client(&gh);
    get(&c, "http://site.test/app.css", &[]).await;
    get(&c, "http://site.test/missing", &[]).await;
    let site = ["service=\"static:plain\""];
    assert_eq!(
        gh.metric("gatehouse_requests_total", &[site[0], "status=\"200\""]),
        1.0
    );
    assert_eq!(
        gh.metric("gatehouse_requests_total", &[site[0], "status=\"404\""]),
        1.0
    );
}

/// Bytes that repeat only every few MiB, so a part sent from the wrong offset shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// Files larger than one sendfile region (1 MiB), whole and in ranges across a region's edge,
/// arrive byte for byte over HTTP/1.1 (sent from the page cache by `sendfile`) and HTTP/2 (read
/// into frames), and the kept-alive connection goes on serving after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_files_arrive_byte_for_byte_over_http1_and_http2() {
    let dir = SiteDir::new();
    let big = pattern(3_500_017);
    dir.put("big.bin", &big);
    let gh = serve(&dir);
    for (protocol, c) in [
        ("HTTP/1.1", client(&gh)),
        ("HTTP/2", gh.h2c_client_for(&["site.test"])),
    ] {
        for _ in 0..2 {
            let resp = c.get("http://site.test/big.bin").send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{protocol}");
            let body = resp.bytes().await.unwrap();
            assert_eq!(body.len(), big.len(), "{protocol}");
            assert!(body == big, "{protocol}: not the file's bytes");
        }
        let resp = c
            .get("http://site.test/big.bin")
            .header("range", "bytes=1048000-2097999")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT, "{protocol}");
        let body = resp.bytes().await.unwrap();
        assert!(
            body == big[1_048_000..2_098_000],
            "{protocol}: not the range"
        );
        let (status, _, body) = get(&c, "http://site.test/app.css", &[]).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "body { color: red }")
        );
    }
}

/// A file truncated while its response is on the way cannot become what the response
/// declared: the connection closes short of the length, as nginx's does, and the site goes on
/// answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_truncated_mid_response_closes_its_connection_short() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = SiteDir::new();
    let len = 64 << 20;
    dir.put("big.bin", &pattern(len));
    let gh = serve(&dir);
    let mut conn = tokio::net::TcpStream::connect(gh.http).await.unwrap();
    conn.write_all(b"GET /big.bin HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .await
        .unwrap();
    let mut start = vec![0u8; 64 * 1024];
    conn.read_exact(&mut start).await.unwrap();
    assert!(start.starts_with(b"HTTP/1.1 200 OK\r\n"));
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.root().join("big.bin"))
        .and_then(|f| f.set_len(1 << 20))
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        conn.read_to_end(&mut rest),
    )
    .await
    .expect("the connection stays open after its file was truncated");
    // A reset is as good as a close here: either way the client learns the body is short.
    let _ = read;
    assert!(
        start.len() + rest.len() < len,
        "{} bytes arrived of a body truncated to 1 MiB",
        start.len() + rest.len()
    );
    let (status, _, body) = get(&client(&gh), "http://site.test/app.css", &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "body { color: red }")
    );
}
