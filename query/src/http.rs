//! HTTP front end: `POST /sql` with the SQL text as the body.
//!
//! The answer is JSON by default: `{"columns": [{"name", "type"}], "rows": [{...}],
//! "row_count": n, "truncated": bool}`; with `Accept: application/vnd.apache.arrow.stream` it
//! is an Arrow IPC stream (what `yottastore sql` asks for), with the cut flagged in the
//! `x-yottastore-truncated` header. Errors are `{"error": "..."}` with 400 (the statement),
//! 408 (the timeout) or 413 (the text's size).
//!
//! `GET /health` answers `ok` while the server runs; `GET /metrics` (`metrics_router`) the
//! broker's Prometheus metrics.

use std::future::Future;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::json::ArrayWriter;

use crate::engine::{QueryEngine, QueryError, QueryOutput};

pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";
pub const TRUNCATED_HEADER: &str = "x-yottastore-truncated";

/// The HTTP routes over `engine`; other front ends (the dashboard) merge their routes into it.
pub fn router(engine: Arc<QueryEngine>) -> Router {
    let body_bytes_max = engine.limits().sql_bytes_max;
    Router::new()
        .route("/sql", post(sql))
        .route("/health", get(|| async { "ok" }))
        .merge(crate::dashboard::routes())
        .layer(DefaultBodyLimit::max(body_bytes_max))
        .with_state(engine)
}

/// `GET /metrics`: the broker's Prometheus metrics (text format), merged into the HTTP router.
pub fn metrics_router(registry: Arc<broker::metrics::MetricsRegistry>) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(registry)
}

async fn metrics(State(registry): State<Arc<broker::metrics::MetricsRegistry>>) -> Response {
    match registry.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, HeaderValue::from_static(broker::metrics::CONTENT_TYPE))], text).into_response(),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the metrics"),
    }
}

/// Serves `router` on `listener` until `shutdown` completes; in-flight requests finish.
pub async fn serve(listener: tokio::net::TcpListener, router: Router, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

async fn sql(State(engine): State<Arc<QueryEngine>>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "the SQL text is not valid UTF-8");
    };
    let wants_arrow = headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains(ARROW_STREAM));
    match engine.execute(text).await {
        Ok(output) if wants_arrow => match arrow_stream(&output) {
            Ok(bytes) => {
                let truncated = HeaderValue::from_static(if output.truncated { "true" } else { "false" });
                ([(header::CONTENT_TYPE, HeaderValue::from_static(ARROW_STREAM)), (header::HeaderName::from_static(TRUNCATED_HEADER), truncated)], bytes)
                    .into_response()
            }
            Err(message) => error(StatusCode::INTERNAL_SERVER_ERROR, &message),
        },
        Ok(output) => match json(&output) {
            Ok(body) => ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response(),
            Err(message) => error(StatusCode::INTERNAL_SERVER_ERROR, &message),
        },
        Err(failure) => {
            let status = match failure {
                QueryError::TooLong { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                QueryError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
                QueryError::DataFusion(_) => StatusCode::BAD_REQUEST,
                QueryError::View(materializer::view::ViewError::Invalid(_)) => StatusCode::BAD_REQUEST,
                QueryError::View(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(status, &failure.to_string())
        }
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

/// The answer as an Arrow IPC stream.
pub fn arrow_stream(output: &QueryOutput) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    let mut writer = StreamWriter::try_new(&mut bytes, &output.schema).map_err(|e| e.to_string())?;
    for batch in &output.batches {
        writer.write(batch).map_err(|e| e.to_string())?;
    }
    writer.finish().map_err(|e| e.to_string())?;
    drop(writer);
    Ok(bytes)
}

/// The answer as JSON: columns with their Arrow types, then rows as objects.
pub fn json(output: &QueryOutput) -> Result<String, String> {
    let columns: Vec<serde_json::Value> = output
        .schema
        .fields()
        .iter()
        .map(|field| serde_json::json!({ "name": field.name(), "type": field.data_type().to_string() }))
        .collect();
    let mut rows = Vec::new();
    {
        let mut writer = ArrayWriter::new(&mut rows);
        for batch in output.batches.iter().filter(|batch| batch.num_rows() > 0) {
            writer.write(batch).map_err(|e| e.to_string())?;
        }
        writer.finish().map_err(|e| e.to_string())?;
    }
    let rows = if rows.is_empty() { b"[]".to_vec() } else { rows };
    let rows = String::from_utf8(rows).map_err(|e| e.to_string())?;
    Ok(format!(
        r#"{{"columns":{},"rows":{},"row_count":{},"truncated":{}}}"#,
        serde_json::Value::Array(columns),
        rows,
        output.row_count(),
        output.truncated
    ))
}
