//! Authentication by API token and authorisation by role and scope.
//!
//! A token reads `fnl_<id>_<secret>`: the id finds the row, the secret is compared with the stored
//! SHA-256 hash in constant time. Secrets are 256 random bits, so a fast hash is enough; they are
//! shown once, when created, and never stored or logged.

use std::fmt;
use std::str::FromStr;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use funnel_domain::{AgentId, CampaignId, Journey, Language, SiteId, SponsorId, Study, StudyId};
use rand::RngCore as _;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq as _;
use uuid::Uuid;

use crate::app::AppState;
use crate::problem::ApiError;

const TOKEN_PREFIX: &str = "fnl";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including study setup, erasure and tokens.
    Admin,
    /// Posts referrals for its own campaign and studies.
    Campaign,
    /// Records outcomes and works queues for its studies and languages.
    Agent,
    /// Site staff: the journeys referred to its own site.
    Site,
    /// Reads its own studies.
    Sponsor,
}

impl Role {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Campaign => "campaign",
            Self::Agent => "agent",
            Self::Site => "site",
            Self::Sponsor => "sponsor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Self::Admin),
            "campaign" => Ok(Self::Campaign),
            "agent" => Ok(Self::Agent),
            "site" => Ok(Self::Site),
            "sponsor" => Ok(Self::Sponsor),
            other => Err(format!(
                "unknown role `{other}` (admin, campaign, agent, site or sponsor)"
            )),
        }
    }
}

/// Who is calling, with the scope its token grants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Principal {
    pub token_id: Uuid,
    pub role: Role,
    pub sponsor_id: Option<SponsorId>,
    pub campaign_id: Option<CampaignId>,
    pub agent_id: Option<AgentId>,
    pub site_id: Option<SiteId>,
    pub study_ids: Vec<StudyId>,
    pub languages: Vec<Language>,
}

impl Principal {
    fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Study, site and campaign setup, erasure: administrators only.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this needs an admin token; yours has the role `{}`",
                self.role
            )))
        }
    }

    /// A campaign posts referrals for its own campaign and the studies it is assigned.
    pub fn require_referral_poster(
        &self,
        study: StudyId,
        campaign: CampaignId,
    ) -> Result<(), ApiError> {
        if self.is_admin()
            || (self.role == Role::Campaign
                && self.campaign_id == Some(campaign)
                && self.study_ids.contains(&study))
        {
            Ok(())
        } else if self.role == Role::Campaign && self.campaign_id != Some(campaign) {
            Err(ApiError::Forbidden(format!(
                "this token posts for another campaign, not {campaign}"
            )))
        } else if self.role == Role::Campaign {
            Err(ApiError::Forbidden(format!(
                "this token may not post referrals for study {study}"
            )))
        } else {
            Err(ApiError::Forbidden(format!(
                "only campaign tokens post referrals; yours has the role `{}`",
                self.role
            )))
        }
    }

    /// Who may see a journey and record what happens in it: agents of its study who speak its
    /// language, and the staff of the site it is at.
    pub fn require_journey_access(&self, journey: &Journey) -> Result<(), ApiError> {
        let allowed = match self.role {
            Role::Admin => true,
            Role::Agent => {
                self.study_ids.contains(&journey.study_id)
                    && self
                        .languages
                        .iter()
                        .any(|language| language.primary() == journey.language.primary())
            }
            Role::Site => journey.site_id.is_some() && journey.site_id == self.site_id,
            Role::Campaign | Role::Sponsor => false,
        };
        if allowed {
            Ok(())
        } else {
            // Not 404: the caller named the journey, and telling it apart from a missing one
            // leaks nothing a valid id would not.
            Err(ApiError::Forbidden(
                "this token has no access to that journey".to_owned(),
            ))
        }
    }

    /// Who may read a study's setup: its sponsor, and the campaigns, agents and sites working it.
    pub fn require_study_read(&self, study: &Study) -> Result<(), ApiError> {
        let allowed = match self.role {
            Role::Admin => true,
            Role::Sponsor => self.sponsor_id == Some(study.sponsor_id),
            Role::Campaign | Role::Agent => self.study_ids.contains(&study.study_id),
            Role::Site => self
                .site_id
                .is_some_and(|site| study.sites.contains_key(&site)),
        };
        if allowed {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "this token has no access to that study".to_owned(),
            ))
        }
    }
}

/// What to create a token for.
#[derive(Clone, Debug, Default)]
pub struct NewToken {
    pub name: String,
    pub role: Option<Role>,
    pub sponsor_id: Option<SponsorId>,
    pub campaign_id: Option<CampaignId>,
    pub agent_id: Option<AgentId>,
    pub site_id: Option<SiteId>,
    pub study_ids: Vec<StudyId>,
    pub languages: Vec<Language>,
}

/// A token as listed: never its secret.
#[derive(Clone, Debug, Serialize)]
pub struct TokenInfo {
    pub id: Uuid,
    pub name: String,
    pub principal: Principal,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("invalid token request: {0}")]
    Invalid(String),
    #[error("the token store is unavailable")]
    Store(#[from] sqlx::Error),
}

/// API tokens in PostgreSQL.
#[derive(Clone, Debug)]
pub struct TokenStore {
    pool: PgPool,
}

type TokenRow = (
    Uuid,
    String,
    Vec<u8>,
    String,
    Option<Uuid>,
    Option<Uuid>,
    Option<Uuid>,
    Option<Uuid>,
    Vec<Uuid>,
    Vec<String>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

/// The columns of a [`TokenRow`], as a macro so queries stay static strings.
macro_rules! token_columns {
    () => {
        "id, name, secret_hash, role, sponsor_id, campaign_id, agent_id, site_id, study_ids, \
         languages, created_at, revoked_at"
    };
}

impl TokenStore {
    #[must_use]
    pub const fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Creates a token and returns it in full: the only time the secret is seen.
    #[tracing::instrument(skip_all, fields(role = ?token.role))]
    pub async fn create(&self, token: &NewToken) -> Result<(TokenInfo, String), TokenError> {
        let role = token
            .role
            .ok_or_else(|| TokenError::Invalid("a role is required".to_owned()))?;
        let missing = match role {
            Role::Campaign if token.campaign_id.is_none() => Some("a campaign id"),
            Role::Campaign if token.study_ids.is_empty() => Some("at least one study"),
            Role::Agent if token.agent_id.is_none() => Some("an agent id"),
            Role::Agent if token.study_ids.is_empty() => Some("at least one study"),
            Role::Agent if token.languages.is_empty() => Some("at least one language"),
            Role::Site if token.site_id.is_none() => Some("a site id"),
            Role::Sponsor if token.sponsor_id.is_none() => Some("a sponsor id"),
            _ => None,
        };
        if let Some(missing) = missing {
            return Err(TokenError::Invalid(format!(
                "a {role} token needs {missing}"
            )));
        }
        let id = Uuid::new_v4();
        let mut secret = [0_u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let secret = URL_SAFE_NO_PAD.encode(secret);
        let name = if token.name.trim().is_empty() {
            format!("{role} token")
        } else {
            token.name.trim().to_owned()
        };
        let row: TokenRow = sqlx::query_as(concat!(
            "INSERT INTO api_tokens (id, name, secret_hash, role, sponsor_id, campaign_id,
                 agent_id, site_id, study_ids, languages)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             RETURNING ",
            token_columns!()
        ))
        .bind(id)
        .bind(&name)
        .bind(hash_secret(&secret))
        .bind(role.as_str())
        .bind(token.sponsor_id.map(Uuid::from))
        .bind(token.campaign_id.map(Uuid::from))
        .bind(token.agent_id.map(Uuid::from))
        .bind(token.site_id.map(Uuid::from))
        .bind(
            token
                .study_ids
                .iter()
                .copied()
                .map(Uuid::from)
                .collect::<Vec<_>>(),
        )
        .bind(
            token
                .languages
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
        )
        .fetch_one(&self.pool)
        .await?;
        let info = token_info(row)?;
        Ok((info, format!("{TOKEN_PREFIX}_{}_{secret}", id.simple())))
    }

    /// Revokes a token at once. Returns `false` when there was no such active token.
    #[tracing::instrument(skip(self))]
    pub async fn revoke(&self, id: Uuid) -> Result<bool, TokenError> {
        let revoked = sqlx::query(
            "UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(revoked.rows_affected() == 1)
    }

    pub async fn list(&self) -> Result<Vec<TokenInfo>, TokenError> {
        let rows: Vec<TokenRow> = sqlx::query_as(concat!(
            "SELECT ",
            token_columns!(),
            " FROM api_tokens ORDER BY created_at"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(token_info).collect()
    }

    /// The principal of an active token, or `None` for anything else (unknown, revoked, wrong
    /// secret, malformed): callers cannot tell these apart.
    #[tracing::instrument(skip_all)]
    pub async fn authenticate(&self, token: &str) -> Result<Option<Principal>, TokenError> {
        let Some((id, secret)) = parse_token(token) else {
            return Ok(None);
        };
        let row: Option<TokenRow> = sqlx::query_as(concat!(
            "SELECT ",
            token_columns!(),
            " FROM api_tokens WHERE id = $1 AND revoked_at IS NULL"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        if !bool::from(row.2.as_slice().ct_eq(&hash_secret(secret))) {
            return Ok(None);
        }
        token_info(row).map(|info| Some(info.principal))
    }
}

impl TokenStore {
    /// The principal of the token with this id while it is active (the web sessions resolve
    /// to their token through here, so a revoked token ends its sessions at once).
    pub(crate) async fn active_principal(&self, id: Uuid) -> Result<Option<Principal>, TokenError> {
        let row: Option<TokenRow> = sqlx::query_as(concat!(
            "SELECT ",
            token_columns!(),
            " FROM api_tokens WHERE id = $1 AND revoked_at IS NULL"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| token_info(row).map(|info| info.principal))
            .transpose()
    }
}

fn parse_token(token: &str) -> Option<(Uuid, &str)> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?.strip_prefix('_')?;
    let (id, secret) = rest.split_once('_')?;
    let id = Uuid::try_parse(id).ok()?;
    (!secret.is_empty()).then_some((id, secret))
}

fn hash_secret(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

fn token_info(row: TokenRow) -> Result<TokenInfo, TokenError> {
    let (id, name, _, role, sponsor, campaign, agent, site, studies, languages, created, revoked) =
        row;
    let role = role.parse().map_err(TokenError::Invalid)?;
    let languages = languages
        .iter()
        .map(|language| Language::parse(language))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TokenError::Invalid(err.to_string()))?;
    Ok(TokenInfo {
        id,
        name,
        principal: Principal {
            token_id: id,
            role,
            sponsor_id: sponsor.map(SponsorId::from),
            campaign_id: campaign.map(CampaignId::from),
            agent_id: agent.map(AgentId::from),
            site_id: site.map(SiteId::from),
            study_ids: studies.into_iter().map(StudyId::from).collect(),
            languages,
        },
        created_at: created,
        revoked_at: revoked,
    })
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            ApiError::Unauthorized(
                "an `Authorization: Bearer <token>` header is required".to_owned(),
            )
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::Unauthorized(
                    "the Authorization header must be `Bearer <token>`".to_owned(),
                )
            })?;
        let principal =
            state.tokens.authenticate(token).await?.ok_or_else(|| {
                ApiError::Unauthorized("the token is unknown or revoked".to_owned())
            })?;
        state.rate_limits.check(principal.token_id)?;
        Ok(principal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_into_id_and_secret() {
        let id = Uuid::new_v4();
        let token = format!("fnl_{}_abcDEF-_123", id.simple());
        assert_eq!(parse_token(&token), Some((id, "abcDEF-_123")));
        for bad in [
            "",
            "fnl",
            "fnl_",
            "xyz_0_abc",
            &format!("fnl_{}_", id.simple()),
            "fnl_nothex_abc",
        ] {
            assert_eq!(parse_token(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn roles_round_trip_through_text() {
        for role in [
            Role::Admin,
            Role::Campaign,
            Role::Agent,
            Role::Site,
            Role::Sponsor,
        ] {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("root".parse::<Role>().is_err());
    }
}
