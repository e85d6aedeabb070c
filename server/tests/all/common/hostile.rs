//! A CDS service that misbehaves in a chosen way, standing in for a real plan's worst day.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

/// How the hostile plan answers the hook call.
#[derive(Debug, Clone)]
pub enum Mode {
    /// A 200 with this JSON body (`application/json`).
    Json(Value),
    /// This status with this JSON body.
    Status(u16, Value),
    /// A 200 with this raw body and content type.
    Raw(&'static str, String),
    /// A body of this many bytes.
    Huge(usize),
    /// No answer for 30 seconds.
    Stall,
    /// Discovery without an appointment-book service.
    NoService,
    /// A redirect elsewhere.
    Redirect,
    /// A fresh card (new uuid) in every answer, and feedback that takes two seconds (counted
    /// in [`FEEDBACK_RECEIVED`]): a second tab can replace the answer while feedback is on its
    /// way.
    NewCardEachAnswer,
}

/// Feedback requests received in [`Mode::NewCardEachAnswer`].
pub static FEEDBACK_RECEIVED: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

/// Starts the hostile plan; returns its base URL.
pub async fn start(mode: Mode) -> (String, tokio::task::JoinHandle<()>) {
    let listener =
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let base = format!("http://{}", listener.local_addr().unwrap_or_else(|e| panic!("{e}")));
    let discovery_mode = mode.clone();
    let slow_feedback = matches!(mode, Mode::NewCardEachAnswer);
    let router = Router::new()
        .route(
            "/cds-services",
            get(move || {
                let mode = discovery_mode.clone();
                async move {
                    let hook = if matches!(mode, Mode::NoService) {
                        "patient-view"
                    } else {
                        "appointment-book"
                    };
                    axum::Json(
                        json!({"services": [{"hook": hook, "id": "hostile", "description": "x"}]}),
                    )
                }
            }),
        )
        .route("/cds-services/hostile", post(move || answer(mode.clone())))
        .route(
            "/cds-services/hostile/feedback",
            post(move || async move {
                if slow_feedback {
                    FEEDBACK_RECEIVED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                }
                StatusCode::OK
            }),
        );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (base, task)
}

async fn answer(mode: Mode) -> Response {
    match mode {
        Mode::Json(body) => axum::Json(body).into_response(),
        Mode::Status(status, body) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            axum::Json(body),
        )
            .into_response(),
        Mode::Raw(content_type, body) => {
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        Mode::Huge(bytes) => {
            let filler = "x".repeat(bytes);
            (
                [(header::CONTENT_TYPE, "application/json")],
                format!("{{\"cards\":[],\"pad\":\"{filler}\"}}"),
            )
                .into_response()
        }
        Mode::Stall => {
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            axum::Json(json!({"cards": []})).into_response()
        }
        Mode::NoService => axum::Json(json!({"cards": []})).into_response(),
        Mode::NewCardEachAnswer => axum::Json(json!({"cards": [card(json!({}))]})).into_response(),
        Mode::Redirect => {
            (StatusCode::FOUND, [(header::LOCATION, "https://elsewhere.example/")]).into_response()
        }
    }
}

/// A valid card, changed by `extra`.
pub fn card(extra: Value) -> Value {
    let mut c = json!({"uuid": uuid::Uuid::new_v4().to_string(), "summary": "A card", "indicator": "info", "source": {"label": "Hostile Plan"}});
    if let Some(map) = extra.as_object() {
        for (k, v) in map {
            c[k] = v.clone();
        }
    }
    c
}

/// A card with script in every text field a plan controls.
pub fn xss_card() -> Value {
    card(json!({
        "summary": "<script>window.__pwned='summary'</script><img src=x onerror=\"window.__pwned='summary-img'\">",
        "detail": "Hello <script>window.__pwned='detail'</script>\n\n<img src=x onerror=\"window.__pwned='detail-img'\">\n\n[click](javascript:window.__pwned='link') [data](data:text/html,<script>parent.__pwned=1</script>)",
        "source": {"label": "<img src=x onerror=\"window.__pwned='source'\">", "url": "javascript:window.__pwned='source-url'"},
        "suggestions": [{"label": "<img src=x onerror=\"window.__pwned='suggestion'\">", "uuid": "s1"}],
        "selectionBehavior": "any",
        "overrideReasons": [{"code": "r", "system": "urn:x", "display": "<img src=x onerror=\"window.__pwned='reason'\">"}],
        "links": [
            {"label": "<img src=x onerror=\"window.__pwned='label'\">", "url": "https://plan.example/info", "type": "absolute"},
            {"label": "js", "url": "javascript:window.__pwned='href'", "type": "absolute"},
            {"label": "data", "url": "data:text/html,<script>parent.__pwned=1</script>", "type": "absolute"}
        ]
    }))
}
