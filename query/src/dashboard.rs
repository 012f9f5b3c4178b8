//! The web dashboard (issue 7): one page served by the binary itself, `GET /`.
//!
//! The page (`query/dashboard/`: HTML, CSS, JavaScript and an icon, hand-written, no framework,
//! no build step) is compiled into the binary with `include_bytes!`, so nothing is loaded from
//! anywhere else at run time; its Content-Security-Policy (`'self'` only) makes the browser
//! enforce that too. It reads everything through `POST /sql` (JSON answers): the system tables
//! for the overview, topics, zone map, groups and views pages, and what the user types in its
//! SQL box. Throughput is computed in the page from successive polls of `system.partitions`.
//!
//! Caching: the asset names carry no version, so a browser must revalidate on each load
//! (`Cache-Control: no-cache`) and gets `304 Not Modified` while the binary is the same (the
//! ETag is a hash of the asset's bytes, computed at compile time). A new binary with changed
//! assets is therefore picked up on the next reload, never served stale.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// FNV-1a 64 of `body`, the ETag.
    hash: u64,
}

impl Asset {
    /// The quoted entity tag: 16 hex digits.
    fn etag(&self) -> String {
        format!("\"{:016x}\"", self.hash)
    }
}

/// FNV-1a 64, evaluated at compile time (a `const fn`), so serving an asset never hashes it.
const fn fnv1a_64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

/// Declares the embedded files (paths relative to `query/dashboard/`).
macro_rules! assets {
    ($($name:literal => $content_type:literal),* $(,)?) => {
        const ASSETS: &[Asset] = &[$(Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!("../dashboard/", $name)),
            hash: fnv1a_64(include_bytes!(concat!("../dashboard/", $name))),
        }),*];
    };
}

assets! {
    "index.html" => "text/html; charset=utf-8",
    "app.css" => "text/css; charset=utf-8",
    "app.js" => "text/javascript; charset=utf-8",
    "charts.js" => "text/javascript; charset=utf-8",
    "favicon.svg" => "image/svg+xml",
}

/// The page may load only what this server serves (scripts, styles, images) and talk only to it
/// (`POST /sql`); no inline script, no framing by other sites.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The dashboard's routes, to merge into the HTTP router (they need no state of their own).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|headers: HeaderMap| async move { serve("index.html", &headers) }))
        .route("/favicon.ico", get(|headers: HeaderMap| async move { serve("favicon.svg", &headers) }))
        .route("/dashboard/{file}", get(|Path(file): Path<String>, headers: HeaderMap| async move { serve(&file, &headers) }))
}

fn serve(name: &str, request: &HeaderMap) -> Response {
    // Only the embedded names: the path is never used to build a file path.
    let Some(asset) = ASSETS.iter().find(|asset| asset.name == name) else {
        return (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "no such dashboard file\n").into_response();
    };
    let etag = asset.etag();
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::try_from(&etag) {
        headers.insert(header::ETAG, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if asset.content_type.starts_with("text/html") {
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
        headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    }
    if etag_matches(request, &etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    (headers, asset.body).into_response()
}

/// Whether `If-None-Match` names `etag` (a list, `*`, or weak tags: RFC 9110's weak comparison).
fn etag_matches(request: &HeaderMap, etag: &str) -> bool {
    request.get_all(header::IF_NONE_MATCH).iter().filter_map(|value| value.to_str().ok()).any(|value| {
        value.split(',').map(str::trim).any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One HTTP/1.1 request over a real socket to the routes; the raw answer.
    async fn request(router: Router, head: &str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, router).await });
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(format!("{head}Host: dashboard\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        server.abort();
        String::from_utf8(answer).unwrap()
    }

    fn header_value<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
        let head = answer.split("\r\n\r\n").next()?;
        head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    #[tokio::test]
    async fn the_page_and_its_assets_are_served_with_their_types() {
        let router: Router = routes();
        let page = request(router.clone(), "GET / HTTP/1.1\r\n").await;
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert_eq!(header_value(&page, "content-type"), Some("text/html; charset=utf-8"));
        assert_eq!(header_value(&page, "cache-control"), Some("no-cache"));
        assert!(header_value(&page, "content-security-policy").is_some_and(|csp| csp.contains("script-src 'self'")));
        // Every asset the page names is served, with its own type.
        for (name, content_type) in [("app.js", "text/javascript"), ("charts.js", "text/javascript"), ("app.css", "text/css"), ("favicon.svg", "image/svg+xml")] {
            assert!(page.contains(&format!("/dashboard/{name}")), "index.html does not load {name}");
            let answer = request(router.clone(), &format!("GET /dashboard/{name} HTTP/1.1\r\n")).await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{name}: {answer}");
            assert!(header_value(&answer, "content-type").is_some_and(|value| value.starts_with(content_type)), "{name}: {answer}");
            assert_eq!(header_value(&answer, "x-content-type-options"), Some("nosniff"));
        }
        // Nothing in the page comes from another origin: the only URL is SVG's namespace name.
        for asset in ASSETS {
            let text = String::from_utf8_lossy(asset.body).replace("http://www.w3.org/2000/svg", "");
            assert!(!text.contains("http://") && !text.contains("https://") && !text.contains("//cdn"), "{} names a URL", asset.name);
        }
    }

    #[tokio::test]
    async fn a_matching_etag_is_answered_not_modified() {
        let router: Router = routes();
        let first = request(router.clone(), "GET /dashboard/app.js HTTP/1.1\r\n").await;
        let etag = header_value(&first, "etag").expect("an ETag").to_string();
        assert_eq!(etag.len(), 18, "{etag}");
        let again = request(router.clone(), &format!("GET /dashboard/app.js HTTP/1.1\r\nIf-None-Match: W/\"0\", {etag}\r\n")).await;
        assert!(again.starts_with("HTTP/1.1 304"), "{again}");
        assert!(!again.contains("function"), "a 304 has no body: {again}");
        let stale = request(router, "GET /dashboard/app.js HTTP/1.1\r\nIf-None-Match: \"0000000000000000\"\r\n").await;
        assert!(stale.starts_with("HTTP/1.1 200"), "{stale}");
        // Different files, different tags.
        let tags: std::collections::HashSet<_> = ASSETS.iter().map(Asset::etag).collect();
        assert_eq!(tags.len(), ASSETS.len());
    }

    #[tokio::test]
    async fn unknown_files_are_not_found() {
        let router: Router = routes();
        for path in ["/dashboard/nope.js", "/dashboard/..%2FCargo.toml", "/dashboard/"] {
            let answer = request(router.clone(), &format!("GET {path} HTTP/1.1\r\n")).await;
            assert!(answer.starts_with("HTTP/1.1 404"), "{path}: {answer}");
        }
    }
}
