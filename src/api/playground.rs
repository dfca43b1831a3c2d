//! The browser playground at `/`: the bundle `npm run build` writes in `web/` (`web/dist`),
//! read once at start and served from memory, gzip-compressed ahead of time. The page uses
//! the public API only; nothing here exists for it but the files. Hashed files under
//! `/assets/` are cached for good, `index.html` never (a new build is seen at once). Every
//! answer carries a Content-Security-Policy that allows the page's own scripts, styles and
//! same-origin connections (fetch, WebSockets) and nothing else.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::AppState;
use super::error::ApiError;

/// What the page may load and reach: its own files and this origin. Styles: CodeMirror and
/// xterm.js set element styles and add style sheets at run time, hence `'unsafe-inline'` for
/// styles (never for scripts).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'; \
    connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Hashed assets: a year, never revalidated.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Most bytes of bundle read at start: a bound on what a misconfigured directory can cost.
const MAX_BUNDLE_BYTES: u64 = 64 << 20;

/// What `/` serves.
#[derive(Debug)]
pub enum Playground {
    /// `server.playground = false`: `/` is a 404.
    Off,
    /// On, but no bundle was found: `/` says how to build it.
    NotBuilt {
        dir: String,
    },
    Built(Bundle),
}

/// The bundle's files, by URL path.
#[derive(Debug, Default)]
pub struct Bundle {
    files: HashMap<String, Asset>,
}

#[derive(Debug)]
/// Held as `Bytes`: an answer shares the loaded file instead of copying it (the script is
/// 423 KB).
struct Asset {
    content_type: &'static str,
    plain: Bytes,
    /// Present when compressing saved something.
    gzip: Option<Bytes>,
}

impl Playground {
    /// Reads the bundle in `dir` (its `index.html` and `assets/`), when `enabled`.
    pub fn load(enabled: bool, dir: &Path) -> Playground {
        if !enabled {
            return Playground::Off;
        }
        let shown = dir.display().to_string();
        match Bundle::read(dir) {
            Ok(bundle) => {
                tracing::info!(dir = %shown, files = bundle.files.len(), "serving the playground");
                Playground::Built(bundle)
            }
            Err(why) => {
                tracing::warn!(dir = %shown, %why, "the playground is not built: / says how to build it");
                Playground::NotBuilt { dir: shown }
            }
        }
    }
}

impl Bundle {
    fn read(dir: &Path) -> Result<Bundle, String> {
        let index =
            std::fs::read(dir.join("index.html")).map_err(|e| format!("index.html: {e}"))?;
        let mut bundle = Bundle::default();
        bundle.add("/", "index.html", index);
        let mut total = 0u64;
        let assets = dir.join("assets");
        let entries = std::fs::read_dir(&assets).map_err(|e| format!("assets/: {e}"))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() || name.starts_with('.') {
                continue;
            }
            total += meta.len();
            if total > MAX_BUNDLE_BYTES {
                return Err(format!("more than {MAX_BUNDLE_BYTES} bytes"));
            }
            let bytes = std::fs::read(entry.path()).map_err(|e| format!("{name}: {e}"))?;
            bundle.add(&format!("/assets/{name}"), &name, bytes);
        }
        Ok(bundle)
    }

    fn add(&mut self, path: &str, name: &str, plain: Vec<u8>) {
        let content_type = content_type(name);
        let gzip = compressible(content_type)
            .then(|| gzip(&plain))
            .filter(|packed| packed.len() < plain.len());
        self.files.insert(
            path.to_owned(),
            Asset {
                content_type,
                plain: Bytes::from(plain),
                gzip: gzip.map(Bytes::from),
            },
        );
    }

    /// The file at `path`, gzip when the client takes it.
    fn answer(&self, path: &str, request: &HeaderMap) -> Option<Response> {
        let asset = self.files.get(path)?;
        let takes_gzip = request
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|coding| coding.split(';').next().map(str::trim) == Some("gzip"));
        let cache = if path == "/" { "no-cache" } else { IMMUTABLE };
        let (body, encoding) = match (&asset.gzip, takes_gzip) {
            (Some(packed), true) => (packed.clone(), Some("gzip")),
            _ => (asset.plain.clone(), None),
        };
        let mut response = Response::new(Body::from(body));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        if let Some(encoding) = encoding {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
        }
        secure(headers);
        Some(response)
    }
}

/// The headers every playground answer carries.
fn secure(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next().unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "ttf" => "font/ttf",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn compressible(content_type: &str) -> bool {
    content_type.starts_with("text/")
        || content_type == "application/json"
        || content_type == "image/svg+xml"
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing into memory cannot fail.
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

/// The page shown at `/` when the bundle was not built.
fn not_built(dir: &str) -> Response {
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>runbox</title></head><body><h1>runbox</h1>\
         <p>The API is running (<a href=\"/openapi.json\">/openapi.json</a>, <a href=\"/languages\">/languages</a>). \
         The browser playground is not built: run <code>npm ci &amp;&amp; npm run build</code> in <code>web/</code> \
         (<code>scripts/setup.sh</code> does it when npm is installed), then restart runbox. It looked in <code>{}</code>.</p>\
         </body></html>",
        escape(dir)
    );
    let mut response = (StatusCode::OK, page).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    secure(headers);
    response
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `GET /`: the playground.
#[utoipa::path(get, path = "/", tag = "playground", responses((status = 200, description = "The browser playground (HTML), or how to build it"), (status = 404, description = "`server.playground = false`")))]
pub async fn index(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    match state.playground.as_ref() {
        Playground::Off => Err(ApiError::NotFound),
        Playground::NotBuilt { dir } => Ok(not_built(dir)),
        Playground::Built(bundle) => bundle.answer("/", &headers).ok_or(ApiError::NotFound),
    }
}

/// `GET /assets/{file}`: the bundle's hashed files.
#[utoipa::path(get, path = "/assets/{file}", tag = "playground", params(("file" = String, Path, description = "A file of the bundle")), responses((status = 200, description = "The file, cached for good")))]
pub async fn asset(
    State(state): State<AppState>,
    UrlPath(file): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    match state.playground.as_ref() {
        Playground::Built(bundle) => bundle
            .answer(&format!("/assets/{file}"), &headers)
            .ok_or(ApiError::NotFound),
        _ => Err(ApiError::NotFound),
    }
}

/// The shared playground of an app.
pub type SharedPlayground = Arc<Playground>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_is_read_typed_and_compressed() {
        let dir = std::env::temp_dir().join(format!("runbox-bundle-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("assets")).unwrap();
        std::fs::write(dir.join("index.html"), "<!doctype html>".repeat(100)).unwrap();
        std::fs::write(
            dir.join("assets/app-1a2b.js"),
            "console.log(1);".repeat(100),
        )
        .unwrap();
        std::fs::write(dir.join("assets/tiny.css"), "a{}").unwrap();
        let Playground::Built(bundle) = Playground::load(true, &dir) else {
            panic!("built");
        };
        let mut takes = HeaderMap::new();
        takes.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("br, gzip;q=0.8"),
        );
        let index = bundle.answer("/", &takes).unwrap();
        assert_eq!(index.headers()[header::CACHE_CONTROL], "no-cache");
        assert_eq!(index.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(
            index.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        let script = bundle
            .answer("/assets/app-1a2b.js", &HeaderMap::new())
            .unwrap();
        assert_eq!(script.headers()[header::CACHE_CONTROL], IMMUTABLE);
        assert!(script.headers().get(header::CONTENT_ENCODING).is_none());
        // Too small to gain from gzip: sent as it is.
        let style = bundle.answer("/assets/tiny.css", &takes).unwrap();
        assert!(style.headers().get(header::CONTENT_ENCODING).is_none());
        assert!(bundle.answer("/assets/none.js", &takes).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(
            Playground::load(true, &dir),
            Playground::NotBuilt { .. }
        ));
        assert!(matches!(Playground::load(false, &dir), Playground::Off));
    }
}
