//! The static-file phase in process: what a client gets, and what the file handling it relies on
//! (one open per file, no blocking on special files, the length fixed at open) does.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use tokio::io::AsyncReadExt;

use super::*;
use crate::objects::{ObjectKey, StaticSiteSpec};
use crate::static_site::Site;

fn route(root: &Path) -> StaticRoute {
    let spec = StaticSiteSpec {
        root: root.display().to_string(),
        index: None,
        fallback: None,
        cache_control: None,
    };
    let site = Site::new(ObjectKey::new("default", "site"), &spec, None).expect("site");
    Arc::new(site).route("")
}

async fn request(
    route: &StaticRoute,
    method: Method,
    path: &str,
) -> (StatusCode, http::HeaderMap, Vec<u8>) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .body(())
        .expect("request");
    let resp = serve(route, req, None).await;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes().to_vec();
    (parts.status, parts.headers, body)
}

/// The descriptors of this process open on `path` (also after it was removed).
fn open_descriptors(path: &Path) -> usize {
    let deleted = format!("{} (deleted)", path.display());
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target == path || target.as_os_str() == deleted.as_str())
        .count()
}

async fn get(route: &StaticRoute, path: &str, headers: &[(&str, &str)]) -> Response<BoxBody> {
    let mut req = Request::builder().uri(path);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    serve(route, req.body(()).expect("request"), None).await
}

async fn body_of(resp: Response<BoxBody>) -> Vec<u8> {
    resp.into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec()
}

fn answers(route: &StaticRoute) -> &Answers {
    &route.files.get::<FileServer>().expect("served").answers
}

#[tokio::test]
async fn files_are_served_whole_and_head_tells_their_length() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.txt"), "hello, world\n").expect("write");
    let route = route(dir.path());
    let (status, headers, body) = request(&route, Method::GET, "/a.txt").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"hello, world\n");
    assert_eq!(headers[header::CONTENT_LENGTH], "13");
    let (status, headers, body) = request(&route, Method::HEAD, "/a.txt").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_LENGTH], "13");
    assert!(body.is_empty());
    let (status, _, _) = request(&route, Method::GET, "/missing.txt").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// The files ServeDir looked at but did not send (HEAD, the file beside the precompressed
/// sibling it chose) are not left open; a file sent whole is, by the route's kept answer.
#[tokio::test]
async fn no_file_stays_open_after_its_request_but_a_kept_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a.txt");
    std::fs::write(&file, "abc").expect("write");
    std::fs::write(dir.path().join("a.txt.gz"), "not really gzip").expect("write");
    let file = file.canonicalize().expect("canonical");
    let route = route(dir.path());
    // HEAD asks for the metadata only; a precompressed sibling is opened instead of the file
    // whose metadata was asked for: neither may leave the file open.
    let (status, _, _) = request(&route, Method::HEAD, "/a.txt").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(open_descriptors(&file), 0, "open after HEAD");
    let req = Request::builder()
        .uri("/a.txt")
        .header(header::ACCEPT_ENCODING, "gzip")
        .body(())
        .expect("request");
    let resp = serve(&route, req, None).await;
    assert_eq!(resp.headers()[header::CONTENT_ENCODING], "gzip");
    drop(resp);
    assert_eq!(open_descriptors(&file), 0, "open after a precompressed GET");
}

#[tokio::test]
async fn a_file_replaced_between_requests_is_served_new() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a.txt");
    std::fs::write(&file, "old").expect("write");
    let route = route(dir.path());
    assert_eq!(
        request(&route, Method::HEAD, "/a.txt").await.0,
        StatusCode::OK
    );
    let staged = dir.path().join(".a.txt.new");
    std::fs::write(&staged, "new!").expect("write");
    std::fs::rename(&staged, &file).expect("rename");
    let (status, _, body) = request(&route, Method::GET, "/a.txt").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"new!");
}

/// Opening a FIFO for reading waits for a writer: it must not hold the worker (it is not a
/// file to serve at all).
#[test]
fn a_fifo_in_the_root_is_not_found_and_does_not_block() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let route = route(dir.path());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let status = runtime.block_on(async { request(&route, Method::GET, "/pipe").await.0 });
        let _ = tx.send(status);
    });
    let status = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("a request for a FIFO still unanswered after 5 s");
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// The response's Content-Length is the length the file had when opened: a file that grows
/// meanwhile is read to that length only (more would overrun the declared length and break the
/// connection).
#[tokio::test]
async fn a_file_is_read_to_the_length_it_had_when_opened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log.txt");
    std::fs::write(&path, "0123456789").expect("write");
    let backend = ConfinedBackend::new(dir.path());
    let mut file = backend
        .open(PathBuf::from(BASE).join("log.txt"))
        .await
        .expect("open");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(b"more"))
        .expect("append");
    let mut read = Vec::new();
    file.read_to_end(&mut read).await.expect("read");
    assert_eq!(read, b"0123456789");
}

/// The bytes go out as the response declared them when it was built: a range from its start,
/// and a file that grew meanwhile only to the declared length.
#[tokio::test]
async fn the_body_is_the_declared_part_of_the_file_as_it_was_when_answered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("digits.txt");
    let digits: Vec<u8> = (0..200_000u32).map(|i| b'0' + (i % 10) as u8).collect();
    std::fs::write(&path, &digits).expect("write");
    let route = route(dir.path());
    let req = Request::builder()
        .uri("/digits.txt")
        .header(header::RANGE, "bytes=70001-150000")
        .body(())
        .expect("request");
    let resp = serve(&route, req, None).await;
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(body, digits[70001..=150000]);

    let req = Request::builder()
        .uri("/digits.txt")
        .body(())
        .expect("request");
    let resp = serve(&route, req, None).await;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(b"more"))
        .expect("append");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(body.len(), digits.len());
    assert!(body == digits, "not the file as it was");
}

/// A file cut short after its answer began cannot be what the answer declared: the body ends
/// in an error (the connection then closes), not early as if complete.
#[tokio::test]
async fn a_file_truncated_under_its_answer_ends_the_body_in_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("big.bin");
    std::fs::write(&path, vec![7u8; 300_000]).expect("write");
    let route = route(dir.path());
    let req = Request::builder()
        .uri("/big.bin")
        .body(())
        .expect("request");
    let resp = serve(&route, req, None).await;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(100_000))
        .expect("truncate");
    assert!(resp.into_body().collect().await.is_err());
}

/// What the backend opens beneath the root is ServeDir's path without its base; a path not
/// under the base is outside.
#[test]
fn paths_are_taken_relative_to_the_base_as_servedir_joins_them() {
    let mut base = PathBuf::from(".");
    base.push("");
    assert_eq!(base, Path::new(BASE), "ServeDir's base for an empty root");
    for (path, expected) in [
        ("./a.txt", Some("a.txt")),
        ("./css/app.css", Some("css/app.css")),
        ("./", Some(".")),
        (".", Some(".")),
        ("./ a b.txt", Some(" a b.txt")),
        ("/srv/site/a.txt", None),
        ("a.txt", None),
        ("..", None),
    ] {
        assert_eq!(relative(Path::new(path)), expected.map(Path::new), "{path}");
    }
}

/// Without `openat2` (kernels before 5.6), files are opened by their resolved path and checked
/// against the resolved root: a symlink inside the root is followed, one leading out of it is
/// refused, also into a sibling directory whose name starts with the root's.
#[test]
fn without_openat2_symlinks_are_resolved_and_kept_beneath_the_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("site");
    let sibling = dir.path().join("site2");
    std::fs::create_dir(&root).expect("root");
    std::fs::create_dir(&sibling).expect("sibling");
    std::fs::write(root.join("a.txt"), "inside").expect("write");
    std::fs::write(sibling.join("secret.txt"), "outside").expect("write");
    std::os::unix::fs::symlink("a.txt", root.join("alias.txt")).expect("symlink");
    std::os::unix::fs::symlink("../site2/secret.txt", root.join("sneaky.txt")).expect("symlink");
    let backend = ConfinedBackend::new(&root);
    let read = |name: &str| {
        backend
            .open_checked(Path::new(name), OFlags::RDONLY)
            .map(|f| std::io::read_to_string(f).expect("read"))
    };
    assert_eq!(read("a.txt").expect("a file inside"), "inside");
    assert_eq!(read("alias.txt").expect("a symlink inside"), "inside");
    let refused = read("sneaky.txt").expect_err("a symlink out of the root");
    assert_eq!(refused.kind(), std::io::ErrorKind::NotFound);
    assert!(read("missing.txt").is_err());
}

/// A repeated GET is answered from the kept answer with ServeDir's own headers; the file is
/// replaced by a rename, rewritten in place, then removed: each change is served at the next
/// request, and the removed file is closed.
#[tokio::test]
async fn a_kept_answer_is_used_until_its_file_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.txt");
    std::fs::write(&path, "one").expect("write");
    let path = path.canonicalize().expect("canonical");
    let route = route(dir.path());
    let first = get(&route, "/a.txt", &[]).await;
    let first_headers = first.headers().clone();
    assert_eq!(body_of(first).await, b"one");
    assert_eq!(answers(&route).len(), 1);
    let again = get(&route, "/a.txt", &[]).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(*again.headers(), first_headers, "not ServeDir's headers");
    assert!(first_headers.contains_key(header::ETAG));
    assert_eq!(body_of(again).await, b"one");
    assert_eq!(open_descriptors(&path), 1, "the kept answer holds the file");

    let staged = dir.path().join(".a.txt.new");
    std::fs::write(&staged, "two!!").expect("write");
    std::fs::rename(&staged, &path).expect("rename");
    let renamed = get(&route, "/a.txt", &[]).await;
    assert_eq!(renamed.headers()[header::CONTENT_LENGTH], "5");
    assert_ne!(renamed.headers()[header::ETAG], first_headers[header::ETAG]);
    assert_eq!(body_of(renamed).await, b"two!!");
    assert_eq!(
        open_descriptors(&path),
        1,
        "the replaced file was not closed"
    );

    std::fs::write(&path, "three, in place").expect("rewrite");
    let rewritten = get(&route, "/a.txt", &[]).await;
    assert_eq!(rewritten.headers()[header::CONTENT_LENGTH], "15");
    assert_eq!(body_of(rewritten).await, b"three, in place");

    std::fs::remove_file(&path).expect("remove");
    assert_eq!(
        get(&route, "/a.txt", &[]).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(open_descriptors(&path), 0, "a removed file kept open");
    assert_eq!(answers(&route).len(), 0);
}

/// A kept file swapped for a symlink that leads out of the root is not served from the kept
/// answer: the path now names another file, and ServeDir's confined open refuses it.
#[tokio::test]
async fn a_kept_file_swapped_for_an_escaping_symlink_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("site");
    std::fs::create_dir(&root).expect("root");
    std::fs::write(dir.path().join("secret.txt"), "outside").expect("write");
    std::fs::write(root.join("a.txt"), "inside").expect("write");
    let route = route(&root);
    assert_eq!(body_of(get(&route, "/a.txt", &[]).await).await, b"inside");
    std::fs::remove_file(root.join("a.txt")).expect("remove");
    std::os::unix::fs::symlink("../secret.txt", root.join("a.txt")).expect("symlink");
    let resp = get(&route, "/a.txt", &[]).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_ne!(body_of(resp).await, b"outside");
}

/// Conditions and ranges are ServeDir's to answer, also for a file whose answer is kept; each
/// Accept-Encoding keeps its own answer.
#[tokio::test]
async fn conditions_ranges_and_encodings_are_answered_as_servedir_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.txt"), "plain text").expect("write");
    std::fs::write(dir.path().join("a.txt.gz"), "pretend gzip").expect("write");
    let route = route(dir.path());
    for _ in 0..2 {
        let plain = get(&route, "/a.txt", &[]).await;
        assert!(!plain.headers().contains_key(header::CONTENT_ENCODING));
        let etag = plain.headers()[header::ETAG]
            .to_str()
            .expect("etag")
            .to_owned();
        assert_eq!(body_of(plain).await, b"plain text");
        let gzip = get(&route, "/a.txt", &[("accept-encoding", "gzip")]).await;
        assert_eq!(gzip.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(body_of(gzip).await, b"pretend gzip");

        let cached = get(&route, "/a.txt", &[("if-none-match", &etag)]).await;
        assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
        let part = get(&route, "/a.txt", &[("range", "bytes=6-")]).await;
        assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(body_of(part).await, b"text");
    }
    assert_eq!(answers(&route).len(), 2, "one per Accept-Encoding");
}

/// A kept answer is asked of ServeDir again after a while: a precompressed sibling added beside
/// an unchanged file is then served.
#[tokio::test]
async fn a_sibling_added_beside_a_kept_file_is_served_after_the_refill() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.txt"), "plain text").expect("write");
    let route = route(dir.path());
    let gzip = [("accept-encoding", "gzip")];
    let plain = get(&route, "/a.txt", &gzip).await;
    assert!(!plain.headers().contains_key(header::CONTENT_ENCODING));
    std::fs::write(dir.path().join("a.txt.gz"), "pretend gzip").expect("write");
    tokio::time::sleep(answers::REFILL_AFTER + Duration::from_millis(50)).await;
    let resp = get(&route, "/a.txt", &gzip).await;
    assert_eq!(resp.headers()[header::CONTENT_ENCODING], "gzip");
    assert_eq!(body_of(resp).await, b"pretend gzip");
}

/// A route keeps at most [`answers::MAX_ANSWERS`] answers (each holds a file open); the files
/// past it are still served. A route taken out of service closes its files, and they no longer
/// count against the bound of all routes.
#[tokio::test]
async fn a_route_keeps_a_bounded_number_of_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let route = route(dir.path());
    for i in 0..answers::MAX_ANSWERS + 10 {
        std::fs::write(dir.path().join(format!("{i}.txt")), i.to_string()).expect("write");
        let resp = get(&route, &format!("/{i}.txt"), &[]).await;
        assert_eq!(body_of(resp).await, i.to_string().as_bytes());
    }
    assert_eq!(answers(&route).len(), answers::MAX_ANSWERS);
    let first = dir.path().join("0.txt").canonicalize().expect("canonical");
    assert_eq!(open_descriptors(&first), 1);
    // Other tests running beside this one keep a few answers of their own.
    assert!(Answers::kept_by_all_routes() >= answers::MAX_ANSWERS);
    drop(route);
    assert_eq!(
        open_descriptors(&first),
        0,
        "a dropped route's file still open"
    );
    assert!(Answers::kept_by_all_routes() < answers::MAX_ANSWERS);
}
