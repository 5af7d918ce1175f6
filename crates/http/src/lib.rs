//! The HTTP side of `serve --http`: a read-only JSON API, Server-Sent Events of state changes,
//! Prometheus metrics, health checks, and the wallboard page.
//!
//! - The JSON is the CLI's: `/api/v1/status` serialises the engine's `StatusView` as
//!   `status --json` does, `/history` the projection's `Interval`s, `/audit` its `AgentAudit`,
//!   `IntervalRow` and `LoginSession` rows, `/config` the engine's `config::to_json`.
//! - Queries need the engine, which one thread owns (sled is synchronous): each is a closure
//!   handed to that thread through a [`QuerySink`] and answered through a oneshot. The live status
//!   is read from the hub's state instead, without waiting for the engine.
//! - `/api/v1/events`: see `events.rs`.
//! - Read-only: only GET routes exist. With a token, every `/api` route and `/metrics` want
//!   `Authorization: Bearer TOKEN` (or `?access_token=TOKEN`, for EventSource, which cannot set
//!   headers); the page, `/healthz` and `/readyz` do not (they reveal nothing).
//! - Every request has a time limit and a body limit; errors are JSON `{"error": ...}` with a
//!   status code that says what went wrong (400 bad parameter, 401 token, 404 unknown, 408 time
//!   limit, 413 body, 503 not ready or busy, 500 the store failed).

pub mod events;
pub mod metrics;

pub use events::{ChangeEvent, EventHub};
pub use metrics::Metrics;

use axum::extract::{Query, Request, State as AxumState};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ivrstate_engine::{Engine, EngineError, HistorySelector};
use ivrstate_model::{AgentId, Dn, IvrName, Micros, PortNum, Seq, TServerName};
use ivrstate_projection::Step;
use ivrstate_publisher::hub::Hub;
use serde::Serialize;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A question for the engine, run on the thread that owns it.
pub type EngineQuery = Box<dyn FnOnce(&Engine) + Send>;

/// Hands a query to the engine's thread; false when that thread is gone or too busy.
pub type QuerySink = Arc<dyn Fn(EngineQuery) -> bool + Send + Sync>;

/// Everything the routes read.
pub struct Api {
    pub hub: Arc<Hub>,
    pub events: Arc<EventHub>,
    pub metrics: Arc<Metrics>,
    pub queries: QuerySink,
    /// The bearer token, when one is required.
    pub token: Option<String>,
    /// How long one request may take.
    pub timeout: Duration,
}

/// The largest request body accepted (the API is GET-only: nothing needs a body).
const MAX_BODY: usize = 16 * 1024;

const INDEX_HTML: &str = include_str!("wallboard/index.html");
const APP_JS: &str = include_str!("wallboard/app.js");
const STYLE_CSS: &str = include_str!("wallboard/style.css");

/// An API error: a status code and a message, sent as `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(self.status, &self.message)
    }
}

fn error_response(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        let status = match e {
            EngineError::Query(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError {
            status,
            message: e.to_string(),
        }
    }
}

type Params = BTreeMap<String, String>;
type ParamsResult = Result<Query<Params>, axum::extract::rejection::QueryRejection>;
type ApiResult<T> = Result<T, ApiError>;

/// The routes of `serve --http`.
pub fn router(api: Arc<Api>) -> Router {
    let protected = Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/history", get(history))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/config", get(config))
        .route("/api/v1/events", get(events))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            api.clone(),
            require_token,
        ));
    let timeout = api.timeout;
    Router::new()
        .route("/", get(|| page(INDEX_HTML, "text/html; charset=utf-8")))
        .route(
            "/app.js",
            get(|| page(APP_JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/style.css",
            get(|| page(STYLE_CSS, "text/css; charset=utf-8")),
        )
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"ok": true})) }),
        )
        .route("/readyz", get(readyz))
        .merge(protected)
        .fallback(|| async { error_response(StatusCode::NOT_FOUND, "no such route: see /api/v1/") })
        .method_not_allowed_fallback(|| async {
            error_response(StatusCode::METHOD_NOT_ALLOWED, "read-only: only GET")
        })
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY))
        .with_state(api)
}

/// `serve --metrics ADDR`: the metrics on any path (what scrapers configured before `--http`
/// existed expect).
pub fn metrics_router(metrics: Arc<Metrics>, hub: Arc<Hub>) -> Router {
    Router::new().fallback(move || {
        let body = metrics.render(&hub);
        async move { metrics_response(body) }
    })
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn page(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Compares without stopping at the first difference (no timing hint about the token).
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_token(
    AxumState(api): AxumState<Arc<Api>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = &api.token else {
        return next.run(request).await;
    };
    let from_header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let from_query = request.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("access_token="))
            .map(str::to_owned)
    });
    let given = from_header.or(from_query);
    if given.is_some_and(|g| same_secret(g.as_bytes(), token.as_bytes())) {
        return next.run(request).await;
    }
    let mut response = error_response(
        StatusCode::UNAUTHORIZED,
        "a bearer token is required: Authorization: Bearer TOKEN (serve --http-token)",
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

async fn readyz(AxumState(api): AxumState<Arc<Api>>) -> Response {
    if api.hub.is_ready() {
        Json(serde_json::json!({"ready": true, "seq": api.hub.read(|s| s.last_seq())}))
            .into_response()
    } else {
        error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the store is being opened and caught up",
        )
    }
}

fn metrics_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn metrics(AxumState(api): AxumState<Arc<Api>>) -> Response {
    let mut body = api.metrics.render(&api.hub);
    body.push_str(&format!(
        "# HELP ivrstate_sse_readers_dropped_total SSE readers dropped for falling behind.\n# TYPE ivrstate_sse_readers_dropped_total counter\nivrstate_sse_readers_dropped_total {}\n",
        api.events.dropped.load(std::sync::atomic::Ordering::Relaxed)
    ));
    metrics_response(body)
}

/// Runs `f` on the engine's thread and waits for its answer.
async fn ask<T: Send + 'static>(
    api: &Api,
    f: impl FnOnce(&Engine) -> Result<T, EngineError> + Send + 'static,
) -> ApiResult<T> {
    if !api.hub.is_ready() {
        return Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "not ready: the store is being opened and caught up".into(),
        });
    }
    let (tx, rx) = oneshot::channel();
    let query: EngineQuery = Box::new(move |engine| {
        let _ = tx.send(f(engine));
    });
    let busy = || ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: "the store is busy or stopping: try again".into(),
    };
    if !(api.queries)(query) {
        return Err(busy());
    }
    match rx.await {
        Ok(answer) => answer.map_err(ApiError::from),
        Err(_) => Err(busy()),
    }
}

fn params(query: ParamsResult) -> ApiResult<Params> {
    query
        .map(|Query(p)| p)
        .map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))
}

/// Refuses parameters a route does not know (a typo must not silently widen a query).
fn only(p: &Params, known: &[&str]) -> ApiResult<()> {
    for key in p.keys() {
        if !known.contains(&key.as_str()) && key != "access_token" {
            return Err(ApiError::bad_request(format!(
                "unknown parameter {key:?}: expected one of {}",
                known.join(", ")
            )));
        }
    }
    Ok(())
}

fn time_param(p: &Params, name: &str) -> ApiResult<Option<Micros>> {
    p.get(name)
        .map(|v| {
            Micros::parse(v)
                .map_err(|e| ApiError::bad_request(format!("parameter {name}={v:?}: {e}")))
        })
        .transpose()
}

fn window(p: &Params) -> ApiResult<(Option<Micros>, Option<Micros>)> {
    let (from, to) = (time_param(p, "from")?, time_param(p, "to")?);
    if let (Some(f), Some(t)) = (from, to) {
        if f > t {
            return Err(ApiError::bad_request(format!(
                "from {f} is after to {t}: swap them"
            )));
        }
    }
    Ok((from, to))
}

/// The JSON of a value, as the CLI prints it with `--json` (pretty).
fn json<T: Serialize>(value: &T) -> Response {
    match serde_json::to_string_pretty(value) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => error_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn status(AxumState(api): AxumState<Arc<Api>>, query: ParamsResult) -> ApiResult<Response> {
    let p = params(query)?;
    only(&p, &["at", "seq"])?;
    let at = time_param(&p, "at")?;
    let seq = p
        .get("seq")
        .map(|s| {
            s.parse::<Seq>()
                .map_err(|_| ApiError::bad_request(format!("parameter seq={s:?}: not a number")))
        })
        .transpose()?;
    let view = match (at, seq) {
        (Some(_), Some(_)) => return Err(ApiError::bad_request("give at or seq, not both")),
        (Some(at), None) => ask(&api, move |e| e.status_at(at)).await?,
        (None, Some(seq)) => {
            ask(&api, move |e| {
                let last = e.log().last_seq();
                if seq > last {
                    return Err(EngineError::Query(format!(
                        "seq {seq} is beyond the end of the log (last seq {last})"
                    )));
                }
                e.status_at_seq(seq)
            })
            .await?
        }
        (None, None) => {
            if !api.hub.is_ready() {
                return Err(ApiError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    message: "not ready: the store is being opened and caught up".into(),
                });
            }
            api.hub.read(|s| ivrstate_engine::status_of(s, None))
        }
    };
    Ok(json(&view))
}

async fn history(AxumState(api): AxumState<Arc<Api>>, query: ParamsResult) -> ApiResult<Response> {
    let p = params(query)?;
    only(&p, &["agent", "dn", "tserver", "port", "from", "to"])?;
    let (from, to) = window(&p)?;
    let selector = match (p.get("agent"), p.get("dn"), p.get("port")) {
        (Some(agent), None, None) => HistorySelector::Agent(AgentId::from(agent.as_str())),
        (None, Some(dn), None) => HistorySelector::Dn {
            dn: Dn::from(dn.as_str()),
            tserver: p.get("tserver").map(|t| TServerName::from(t.as_str())),
        },
        (None, None, Some(port)) => {
            let Some((ivr, port)) = port.split_once(':') else {
                return Err(ApiError::bad_request(format!(
                    "port={port:?}: expected IVR:PORT, e.g. port=IVR_1:01"
                )));
            };
            HistorySelector::Port {
                ivr: IvrName::from(ivr),
                port: PortNum::from(port),
            }
        }
        _ => {
            return Err(ApiError::bad_request(
                "exactly one of agent, dn or port is required",
            ))
        }
    };
    let intervals = ask(&api, move |e| {
        let intervals = e.history(&selector, from, to)?;
        let provenance = e.log().provenance()?;
        let sourced: Vec<ivrstate_engine::Sourced> = intervals
            .iter()
            .map(|interval| ivrstate_engine::Sourced {
                interval,
                source: provenance.source(interval.start_seq),
            })
            .collect();
        serde_json::to_value(&sourced).map_err(|e| EngineError::Query(e.to_string()))
    })
    .await?;
    Ok(json(&intervals))
}

/// A zone for aligning intervals: the same spellings as `--tz` (`UTC`, `local`, an offset such
/// as `+02:00`, or a tz database name), read by the one zone parser in the model.
fn zone(name: &str) -> ApiResult<jiff::tz::TimeZone> {
    ivrstate_model::Zone::parse(name)
        .map(|z| z.time_zone().clone())
        .map_err(|_| {
            ApiError::bad_request(format!(
                "tz={name:?}: expected UTC, an offset such as +02:00, or a zone such as Europe/Paris"
            ))
        })
}

async fn audit(AxumState(api): AxumState<Arc<Api>>, query: ParamsResult) -> ApiResult<Response> {
    let p = params(query)?;
    only(&p, &["from", "to", "interval", "sessions", "tz"])?;
    let (from, to) = window(&p)?;
    let sessions = match p.get("sessions").map(String::as_str) {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") | Some("") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "sessions={other:?}: expected true or false"
            )))
        }
    };
    let step = p
        .get("interval")
        .map(|s| s.parse::<Step>().map_err(ApiError::bad_request))
        .transpose()?;
    let tz = zone(p.get("tz").map_or("UTC", String::as_str))?;
    match (step, sessions) {
        (Some(_), true) => Err(ApiError::bad_request("give interval or sessions, not both")),
        (Some(step), false) => {
            let (_, rows) = ask(&api, move |e| e.audit_intervals(from, to, step, &tz)).await?;
            Ok(json(&rows))
        }
        (None, true) => Ok(json(&ask(&api, move |e| e.sessions(from, to)).await?)),
        (None, false) => Ok(json(&ask(&api, move |e| e.audit(from, to)).await?)),
    }
}

async fn config(AxumState(api): AxumState<Arc<Api>>) -> ApiResult<Response> {
    let config = ask(&api, |e| {
        Ok(ivrstate_engine::config::to_json(e.stored_config()))
    })
    .await?;
    Ok(json(&config))
}

/// Feeds one SSE reader: a reset when changes were missed, the backlog, then live changes.
async fn forward(
    mut sub: events::Subscription,
    hub: Arc<EventHub>,
    tx: tokio::sync::mpsc::Sender<Event>,
) {
    use tokio::sync::broadcast::error::RecvError;
    let dropped = || {
        hub.dropped
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    };
    if sub.gap {
        // Changes were missed: the reader reloads the state (the id is where it stands).
        let reset = Event::default()
            .event("reset")
            .id(sub.after.to_string())
            .data("{}");
        if tx.send(reset).await.is_err() {
            return;
        }
    }
    // The backlog is already in memory: it is handed over at the reader's pace.
    while let Some(e) = sub.backlog.pop_front() {
        sub.after = e.seq;
        if tx.send(sse_event(&e)).await.is_err() {
            return;
        }
    }
    loop {
        let e = tokio::select! {
            received = sub.live.recv() => received,
            () = tx.closed() => return,
        };
        match e {
            Ok(e) if e.seq <= sub.after => continue,
            Ok(e) => {
                sub.after = e.seq;
                match tx.try_send(sse_event(&e)) {
                    Ok(()) => {}
                    Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                        dropped();
                        return;
                    }
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            Err(RecvError::Lagged(_)) => {
                dropped();
                return;
            }
            Err(RecvError::Closed) => return,
        }
    }
}

async fn events(
    AxumState(api): AxumState<Arc<Api>>,
    headers: HeaderMap,
    query: ParamsResult,
) -> ApiResult<Response> {
    let p = params(query)?;
    only(&p, &["after"])?;
    // Last-Event-ID (a reconnecting EventSource) wins over `after` (the page's first connect,
    // with the seq of the status it loaded).
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| p.get("after").cloned());
    let after = last_id
        .map(|s| {
            s.trim()
                .parse::<Seq>()
                .map_err(|_| ApiError::bad_request(format!("event id {s:?}: not a seq")))
        })
        .transpose()?;
    let subscription = api.events.subscribe(after);
    // A task per reader moves events into the reader's own bounded queue; when the reader is
    // that far behind (or behind the broadcast's bound), the task gives up on it: the reader is
    // dropped, and the store and the other readers never wait for it.
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(events::PER_READER);
    tokio::spawn(forward(subscription, api.events.clone(), tx));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<Event, Infallible>(e), rx))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

fn sse_event(e: &ChangeEvent) -> Event {
    Event::default()
        .event("change")
        .id(e.seq.to_string())
        .data(&e.json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_are_utc_offsets_or_names() {
        assert_eq!(zone("UTC").unwrap(), jiff::tz::TimeZone::UTC);
        let plus2 = zone("+02:00").unwrap();
        assert_eq!(plus2.to_offset(jiff::Timestamp::UNIX_EPOCH).seconds(), 7200);
        assert!(zone("Mars/Olympus").is_err());
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
    }
}
