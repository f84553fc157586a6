//! The simulator's HTTP client: bounded concurrency, retries where they are safe, and counters.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::stats::Stats;

/// Attempts per request when the service is briefly unavailable or throttles.
const ATTEMPTS: u32 = 6;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait honoured from a `Retry-After`.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Why a request failed for good.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    /// The service refused it (the problem's detail, never personal data).
    #[error("{status}: {detail}")]
    Status { status: StatusCode, detail: String },
    #[error("no answer: {0}")]
    Transport(String),
    #[error("the run is stopping")]
    Cancelled,
}

impl RequestError {
    pub(crate) fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// What a successful request answered.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    /// The JSON body (`Null` for 204).
    pub(crate) body: Value,
}

#[derive(Clone, Debug)]
pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
    permits: Arc<Semaphore>,
    pub(crate) stats: Arc<Stats>,
    cancel: CancellationToken,
}

/// One request: what it is (for counters and failure reports) and its parts.
pub(crate) struct Request<'a> {
    pub(crate) method: Method,
    pub(crate) path: &'a str,
    pub(crate) token: &'a str,
    pub(crate) body: Option<&'a Value>,
    pub(crate) if_match: Option<u64>,
    /// Shown in failure reports instead of the path (which holds ids only, but is long).
    pub(crate) what: &'a str,
}

impl Api {
    pub(crate) fn new(
        base: &str,
        concurrency: usize,
        stats: Arc<Stats>,
        cancel: CancellationToken,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(concurrency.max(1))
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            stats,
            cancel,
        })
    }

    /// Sends a request, retrying on 429 (after `Retry-After`), 502–504 and lost connections.
    /// Every write the simulator makes is safe to repeat: referrals carry an external id,
    /// journey steps an `If-Match` (a repeat of an applied step is a 412, which the caller
    /// resolves), queue completions a lease.
    pub(crate) async fn send(&self, request: &Request<'_>) -> Result<Answer, RequestError> {
        let mut backoff = FIRST_BACKOFF;
        let mut last_error = RequestError::Transport("not sent".to_owned());
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                Stats::add(&self.stats.retried, 1);
            }
            let outcome = {
                let _permit = tokio::select! {
                    () = self.cancel.cancelled() => return Err(RequestError::Cancelled),
                    permit = self.permits.acquire() => permit.map_err(|_| RequestError::Cancelled)?,
                };
                self.send_once(request).await
            };
            Stats::add(&self.stats.requests, 1);
            let wait = match outcome {
                Ok(answer) => return Ok(answer),
                Err((error, retry_after)) => {
                    let retryable = match error.status() {
                        Some(StatusCode::TOO_MANY_REQUESTS) => {
                            Stats::add(&self.stats.throttled, 1);
                            true
                        }
                        Some(
                            StatusCode::BAD_GATEWAY
                            | StatusCode::SERVICE_UNAVAILABLE
                            | StatusCode::GATEWAY_TIMEOUT,
                        )
                        | None => true,
                        Some(_) => false,
                    };
                    if !retryable {
                        return Err(error);
                    }
                    tracing::debug!(what = request.what, %error, "retrying a request");
                    last_error = error;
                    retry_after.unwrap_or(backoff)
                }
            };
            backoff = (backoff * 2).min(MAX_RETRY_AFTER);
            tokio::select! {
                () = self.cancel.cancelled() => return Err(RequestError::Cancelled),
                () = tokio::time::sleep(wait) => {}
            }
        }
        Err(last_error)
    }

    async fn send_once(
        &self,
        request: &Request<'_>,
    ) -> Result<Answer, (RequestError, Option<Duration>)> {
        let url = format!("{}{}", self.base, request.path);
        let mut builder = self
            .http
            .request(request.method.clone(), url)
            .bearer_auth(request.token);
        if let Some(body) = request.body {
            builder = builder.json(body);
        }
        if let Some(version) = request.if_match {
            builder = builder.header("If-Match", format!("\"{version}\""));
        }
        let response = builder
            .send()
            .await
            .map_err(|err| (RequestError::Transport(transport_reason(&err)), None))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(|secs| Duration::from_secs(secs).min(MAX_RETRY_AFTER));
        let bytes = response
            .bytes()
            .await
            .map_err(|err| (RequestError::Transport(transport_reason(&err)), None))?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        if status.is_success() {
            Ok(Answer { status, body })
        } else {
            let detail = body
                .get("detail")
                .or_else(|| body.get("title"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .chars()
                .take(300)
                .collect();
            Err((RequestError::Status { status, detail }, retry_after))
        }
    }
}

/// The kind of transport failure, without the URL (which reqwest includes in its messages).
fn transport_reason(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        "timed out".to_owned()
    } else if err.is_connect() {
        "cannot connect".to_owned()
    } else if err.is_body() || err.is_decode() {
        "broken response body".to_owned()
    } else {
        "request failed".to_owned()
    }
}
