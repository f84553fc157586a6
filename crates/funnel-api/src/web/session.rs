//! Browser sessions: a page is signed in with an API token once, and a cookie stands for that
//! token from then on.
//!
//! The cookie holds a random 256-bit session id; PostgreSQL keeps only its SHA-256 (a copy of
//! the table opens no session) with the token it stands for. Every request resolves the session
//! to the token's *current* principal through the token store, so the pages have exactly the
//! role and scope the API gives the same token, and a revoked token ends its sessions at once.
//!
//! Cross-site requests: the cookie is `SameSite=Strict`, so a browser never sends it on a
//! request another site starts, and the two state-changing forms (sign-in, sign-out) are also
//! refused when the browser says they come from another origin (`Origin`, or
//! `Sec-Fetch-Site` when there is no `Origin`). No CSRF token is needed on top of both.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use super::WebError;
use crate::app::AppState;
use crate::auth::Principal;
use crate::problem::ApiError;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "funnel_session";

/// How long a session lasts from sign-in: a working day, after which the token is asked again.
pub(crate) const LIFETIME: Duration = Duration::hours(8);

/// Expired sessions are kept this long past expiry (for investigation), then deleted.
const KEEP_EXPIRED: Duration = Duration::days(1);

/// The signed-in caller of a page.
#[derive(Debug)]
pub(crate) struct WebSession {
    pub(crate) principal: Principal,
    hash: [u8; 32],
}

fn hash(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// The `Set-Cookie` value of a new session. `Secure` works on `http://127.0.0.1` and
/// `http://localhost` too, which browsers treat as secure contexts.
fn cookie(id: &str) -> HeaderValue {
    let seconds = LIFETIME.num_seconds();
    HeaderValue::try_from(format!(
        "{COOKIE}={id}; HttpOnly; Secure; SameSite=Strict; Path=/ui; Max-Age={seconds}"
    ))
    .expect("a base64url id makes a valid header value")
}

/// The `Set-Cookie` value that makes the browser forget the session.
pub(crate) fn cleared_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "funnel_session=; HttpOnly; Secure; SameSite=Strict; Path=/ui; Max-Age=0",
    )
}

/// The session id the request carries, if any.
fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == COOKIE && !value.is_empty())
        .map(|(_, value)| value)
}

/// Opens a session for the token `token_id` and returns the `Set-Cookie` value.
pub(crate) async fn open(
    state: &AppState,
    token_id: Uuid,
    now: DateTime<Utc>,
) -> Result<HeaderValue, ApiError> {
    let mut raw = [0_u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let id = URL_SAFE_NO_PAD.encode(raw);
    // Sign-ins are rare: a good moment to forget sessions long expired.
    sqlx::query("DELETE FROM web_sessions WHERE expires_at < $1")
        .bind(now - KEEP_EXPIRED)
        .execute(&state.db)
        .await?;
    sqlx::query(
        "INSERT INTO web_sessions (session_hash, token_id, created_at, expires_at) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(hash(&id).as_slice())
    .bind(token_id)
    .bind(now)
    .bind(now + LIFETIME)
    .execute(&state.db)
    .await?;
    Ok(cookie(&id))
}

/// Ends the session (sign-out). Ending one that has ended already is not an error.
pub(crate) async fn end(state: &AppState, session: &WebSession) -> Result<(), ApiError> {
    sqlx::query(
        "UPDATE web_sessions SET ended_at = $2 WHERE session_hash = $1 AND ended_at IS NULL",
    )
    .bind(session.hash.as_slice())
    .bind(state.clock.now())
    .execute(&state.db)
    .await?;
    Ok(())
}

/// The principal of a live session: not ended, not expired, its token still active.
async fn resolve(state: &AppState, hash: &[u8; 32]) -> Result<Option<Principal>, ApiError> {
    let token: Option<Uuid> = sqlx::query_scalar(
        "SELECT token_id FROM web_sessions \
         WHERE session_hash = $1 AND ended_at IS NULL AND expires_at > $2",
    )
    .bind(hash.as_slice())
    .bind(state.clock.now())
    .fetch_optional(&state.db)
    .await?;
    let Some(token) = token else {
        return Ok(None);
    };
    state
        .tokens
        .active_principal(token)
        .await
        .map_err(ApiError::from)
}

impl FromRequestParts<AppState> for WebSession {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, WebError> {
        let Some(id) = session_id(&parts.headers) else {
            return Err(WebError::SignIn);
        };
        let hash = hash(id);
        let principal = resolve(state, &hash).await?.ok_or(WebError::SignIn)?;
        // A page costs what an API request costs, against the same token's budget.
        state.rate_limits.check(principal.token_id)?;
        Ok(Self { principal, hash })
    }
}

/// Refuses a form posted from another origin. Browsers send `Origin` on every POST (and
/// `Sec-Fetch-Site` on every request); a client that sends neither is not a browser, and so no
/// vehicle for cross-site request forgery.
pub(crate) fn require_same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let refused = || ApiError::Forbidden("this form may only be posted from its own page".into());
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers
            .get(header::HOST)
            .and_then(|host| host.to_str().ok())
            .ok_or_else(refused)?;
        let origin_host = origin
            .to_str()
            .ok()
            .and_then(|origin| origin.split_once("://"))
            .map(|(_, rest)| rest)
            .ok_or_else(refused)?;
        return if origin_host.eq_ignore_ascii_case(host) {
            Ok(())
        } else {
            Err(refused())
        };
    }
    match headers
        .get("sec-fetch-site")
        .and_then(|value| value.to_str().ok())
    {
        None | Some("same-origin" | "none") => Ok(()),
        Some(_) => Err(refused()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    header::HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                )
            })
            .collect()
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let found = headers(&[("cookie", "theme=dark; funnel_session=abc-_12; lang=es")]);
        assert_eq!(session_id(&found), Some("abc-_12"));
        for none in ["theme=dark", "funnel_session=", "funnel_sessionx=abc"] {
            let mut map = HeaderMap::new();
            map.insert(header::COOKIE, HeaderValue::from_static(none));
            assert_eq!(session_id(&map), None, "{none}");
        }
    }

    #[test]
    fn the_cookie_is_http_only_secure_and_strict() {
        let value = cookie("abc");
        let value = value.to_str().unwrap();
        for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/ui"] {
            assert!(value.contains(flag), "{value}");
        }
    }

    #[test]
    fn forms_from_other_origins_are_refused() {
        let same = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
        ]);
        assert!(require_same_origin(&same).is_ok());
        let other = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "https://evil.example"),
        ]);
        assert!(require_same_origin(&other).is_err());
        let opaque = headers(&[("host", "127.0.0.1:8080"), ("origin", "null")]);
        assert!(require_same_origin(&opaque).is_err());
        let cross = headers(&[("sec-fetch-site", "cross-site")]);
        assert!(require_same_origin(&cross).is_err());
        assert!(require_same_origin(&headers(&[("sec-fetch-site", "same-origin")])).is_ok());
        assert!(require_same_origin(&HeaderMap::new()).is_ok());
    }
}
