//! The referrals' PostgreSQL side, written for many concurrent referrals in one transaction.
//!
//! A referral needs four things stored before its events are appended: the idempotency
//! reservation (`referral_requests`), the duplicate-detection fingerprints
//! (`contact_fingerprints`), the journey's candidate (`candidate_journeys`) and the candidate's
//! data key (`candidate_keys`). Each used to be its own transaction, so a referral cost four
//! synchronous commits, each a WAL flush. Here they are one transaction, and concurrent
//! referrals share it: a few writer tasks take whatever claims are waiting (up to
//! [`MAX_GROUP`]) and store them with one set-based statement per table, in the order the
//! one-by-one path used (reservation, fingerprints, candidate, key). A referral therefore
//! costs a fraction of a commit under load and one commit when alone.
//!
//! Concurrency with other writers (a second writer task, another instance of the service):
//! rows are inserted in sorted key order and the tables in a fixed order, so two transactions
//! wait for each other instead of deadlocking; a deadlock or serialization failure anyway is
//! retried. A claim that loses an insert race waits for the winner's commit and then sees its
//! row, as before.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use funnel_domain::{CandidateId, JourneyId};
use sqlx::{PgConnection, PgPool};
use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;

/// Most referrals stored in one transaction.
pub(crate) const MAX_GROUP: usize = 256;
/// Transactions in progress at once: one gathers the next group while another commits.
const WRITERS: usize = 2;
/// Attempts for a group that hit a deadlock, a serialization failure or a lost connection.
const ATTEMPTS: usize = 3;

/// What a referral asks to have stored.
#[derive(Clone, Debug)]
pub(crate) struct Claim {
    pub(crate) campaign_id: Uuid,
    /// The keyed hash of the idempotency key.
    pub(crate) stored_key: String,
    pub(crate) request_hash: [u8; 32],
    pub(crate) study_id: Uuid,
    /// Fresh ids for a new reservation; for a resumed one, the reservation's.
    pub(crate) journey_id: Uuid,
    pub(crate) candidate_id: Uuid,
    /// Keyed fingerprints of the normalised phone and e-mail.
    pub(crate) prints: Vec<Vec<u8>>,
    /// The data key a new candidate gets.
    pub(crate) fresh_key: Vec<u8>,
    /// The reservation exists already (an earlier attempt stored it but appended nothing):
    /// store the rest again, idempotently.
    pub(crate) resume: bool,
}

/// What became of a claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Claimed {
    /// Stored: append the journey's events.
    Ready {
        journey_id: JourneyId,
        candidate_id: CandidateId,
        /// The same person's earlier journey in this study.
        duplicate_of: Option<JourneyId>,
        /// The candidate's data key; `None` once erased.
        data_key: Option<Vec<u8>>,
    },
    /// An earlier request holds this key: the same request (`same_request`) or another one.
    Existing {
        journey_id: JourneyId,
        candidate_id: CandidateId,
        same_request: bool,
    },
}

type Reply = oneshot::Sender<Result<Claimed, Arc<sqlx::Error>>>;

/// Hands claims to the writer tasks; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct ReferralStore {
    claims: mpsc::Sender<(Claim, Reply)>,
}

/// Why a claim was not stored.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClaimError {
    #[error("storing the referral failed")]
    Database(#[source] Arc<sqlx::Error>),
    #[error("the referral store has stopped")]
    Stopped,
}

impl ReferralStore {
    /// Starts the writer tasks. They end when the last handle is dropped, after answering
    /// every claim already handed to them.
    pub(crate) fn start(pool: &PgPool) -> Self {
        let (claims, receiver) = mpsc::channel(MAX_GROUP * 8);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..WRITERS {
            tokio::spawn(write_groups(pool.clone(), receiver.clone()));
        }
        Self { claims }
    }

    /// Stores `claim` (in a transaction shared with other referrals waiting at the same time).
    pub(crate) async fn claim(&self, claim: Claim) -> Result<Claimed, ClaimError> {
        let (reply, answer) = oneshot::channel();
        self.claims
            .send((claim, reply))
            .await
            .map_err(|_| ClaimError::Stopped)?;
        answer
            .await
            .map_err(|_| ClaimError::Stopped)?
            .map_err(ClaimError::Database)
    }
}

async fn write_groups(pool: PgPool, receiver: Arc<Mutex<mpsc::Receiver<(Claim, Reply)>>>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    loop {
        // Held only while gathering: the other writer gathers while this one commits.
        let received = receiver.lock().await.recv_many(&mut group, MAX_GROUP).await;
        if received == 0 {
            return;
        }
        let (claims, replies): (Vec<Claim>, Vec<Reply>) = group.drain(..).unzip();
        let outcome = store_with_retries(&pool, &claims).await;
        match outcome {
            Ok(claimed) => {
                for (reply, claimed) in replies.into_iter().zip(claimed) {
                    // A caller that gave up (its request timed out) no longer listens.
                    let _ = reply.send(Ok(claimed));
                }
            }
            Err(error) => {
                tracing::error!(
                    error = %crate::problem::error_chain(&error),
                    referrals = claims.len(),
                    "storing referrals failed"
                );
                let error = Arc::new(error);
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}

#[tracing::instrument(skip_all, fields(referrals = claims.len()))]
async fn store_with_retries(pool: &PgPool, claims: &[Claim]) -> Result<Vec<Claimed>, sqlx::Error> {
    let mut attempt = 1;
    loop {
        let result = async {
            let mut tx = pool.begin().await?;
            let claimed = store(&mut tx, claims).await?;
            tx.commit().await?;
            Ok(claimed)
        }
        .await;
        match result {
            Err(error) if attempt < ATTEMPTS && is_retryable(&error) => {
                tracing::warn!(attempt, error = %error, "storing referrals: retrying");
                tokio::time::sleep(Duration::from_millis(10 * attempt as u64)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

fn is_retryable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("40001" | "40P01")),
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => true,
        _ => false,
    }
}

/// The referral an existing reservation belongs to.
struct Reservation {
    hash: Vec<u8>,
    journey: Uuid,
    candidate: Uuid,
}

/// One claim that goes on past the reservation, with the ids it ends up with.
struct Active {
    index: usize,
    journey: Uuid,
    candidate: Uuid,
    primary: Option<(Uuid, Uuid)>,
}

/// Stores every claim in the transaction `conn` is in; answers in the claims' order.
pub(crate) async fn store(
    conn: &mut PgConnection,
    claims: &[Claim],
) -> Result<Vec<Claimed>, sqlx::Error> {
    let mut answers: Vec<Option<Claimed>> = vec![None; claims.len()];
    let fresh = reserve(conn, claims).await?;
    let existing = reservations_of(
        conn,
        claims
            .iter()
            .enumerate()
            .filter(|(index, claim)| !claim.resume && !fresh.contains(index)),
    )
    .await?;

    let mut active = Vec::new();
    for (index, claim) in claims.iter().enumerate() {
        if claim.resume || fresh.contains(&index) {
            active.push(Active {
                index,
                journey: claim.journey_id,
                candidate: claim.candidate_id,
                primary: None,
            });
            continue;
        }
        let reservation = existing
            .get(&(claim.campaign_id, claim.stored_key.clone()))
            .ok_or_else(|| {
                sqlx::Error::Protocol("a referral reservation vanished in its transaction".into())
            })?;
        answers[index] = Some(Claimed::Existing {
            journey_id: JourneyId::from(reservation.journey),
            candidate_id: CandidateId::from(reservation.candidate),
            same_request: reservation.hash == claim.request_hash,
        });
    }
    // Two resumed attempts of one referral in one group: the journey is stored once.
    let mut seen = HashSet::new();
    active.retain(|claim| seen.insert(claim.journey));

    claim_fingerprints(conn, claims, &mut active).await?;
    link_duplicates(conn, claims, &active).await?;
    let keys = store_candidates(conn, claims, &active).await?;

    for claim in &active {
        let candidate = claim
            .primary
            .map_or(claim.candidate, |(_, candidate)| candidate);
        answers[claim.index] = Some(Claimed::Ready {
            journey_id: JourneyId::from(claim.journey),
            candidate_id: CandidateId::from(candidate),
            duplicate_of: claim.primary.map(|(journey, _)| JourneyId::from(journey)),
            data_key: keys.get(&candidate).cloned().flatten(),
        });
    }
    // The claims dropped as repeats of a resumed one get its answer.
    for (index, claim) in claims.iter().enumerate() {
        if answers[index].is_none() {
            answers[index] = active
                .iter()
                .find(|active| active.journey == claim.journey_id)
                .and_then(|active| answers[active.index].clone());
        }
    }
    answers
        .into_iter()
        .map(|answer| {
            answer.ok_or_else(|| sqlx::Error::Protocol("a referral claim went unanswered".into()))
        })
        .collect()
}

/// Inserts the new reservations (sorted by key); returns the indexes of the claims that got one.
async fn reserve(conn: &mut PgConnection, claims: &[Claim]) -> Result<HashSet<usize>, sqlx::Error> {
    let mut order: Vec<usize> = (0..claims.len())
        .filter(|&index| !claims[index].resume)
        .collect();
    if order.is_empty() {
        return Ok(HashSet::new());
    }
    order.sort_by(|&a, &b| {
        (claims[a].campaign_id, &claims[a].stored_key, a).cmp(&(
            claims[b].campaign_id,
            &claims[b].stored_key,
            b,
        ))
    });
    let column = |field: fn(&Claim) -> Uuid| -> Vec<Uuid> {
        order.iter().map(|&index| field(&claims[index])).collect()
    };
    let keys: Vec<&str> = order
        .iter()
        .map(|&index| claims[index].stored_key.as_str())
        .collect();
    let hashes: Vec<&[u8]> = order
        .iter()
        .map(|&index| claims[index].request_hash.as_slice())
        .collect();
    let inserted: Vec<(Uuid,)> = sqlx::query_as(
        "INSERT INTO referral_requests
             (campaign_id, idempotency_key, request_hash, journey_id, candidate_id, study_id)
         SELECT campaign_id, idempotency_key, request_hash, journey_id, candidate_id, study_id
         FROM unnest($1::uuid[], $2::text[], $3::bytea[], $4::uuid[], $5::uuid[], $6::uuid[])
             WITH ORDINALITY
             AS r(campaign_id, idempotency_key, request_hash, journey_id, candidate_id, study_id, n)
         ORDER BY n
         ON CONFLICT (campaign_id, idempotency_key) DO NOTHING
         RETURNING journey_id",
    )
    .bind(column(|claim| claim.campaign_id))
    .bind(keys)
    .bind(hashes)
    .bind(column(|claim| claim.journey_id))
    .bind(column(|claim| claim.candidate_id))
    .bind(column(|claim| claim.study_id))
    .fetch_all(&mut *conn)
    .await?;
    let inserted: HashSet<Uuid> = inserted.into_iter().map(|(journey,)| journey).collect();
    Ok(order
        .into_iter()
        .filter(|&index| inserted.contains(&claims[index].journey_id))
        .collect())
}

/// The stored reservations of `claims`, by `(campaign, stored key)`. A separate statement: the
/// insert that lost a race cannot see the winner's row in its own snapshot.
async fn reservations_of<'c>(
    conn: &mut PgConnection,
    claims: impl Iterator<Item = (usize, &'c Claim)>,
) -> Result<HashMap<(Uuid, String), Reservation>, sqlx::Error> {
    let (campaigns, keys): (Vec<Uuid>, Vec<&str>) = claims
        .map(|(_, claim)| (claim.campaign_id, claim.stored_key.as_str()))
        .unzip();
    if campaigns.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(Uuid, String, Vec<u8>, Uuid, Uuid)> = sqlx::query_as(
        // One primary-key probe per key, whatever the planner thinks of the table's size.
        "SELECT r.campaign_id, r.idempotency_key, r.request_hash, r.journey_id, r.candidate_id
         FROM unnest($1::uuid[], $2::text[]) AS k(campaign_id, idempotency_key)
         CROSS JOIN LATERAL (
             SELECT r.campaign_id, r.idempotency_key, r.request_hash, r.journey_id,
                 r.candidate_id
             FROM referral_requests r
             WHERE r.campaign_id = k.campaign_id AND r.idempotency_key = k.idempotency_key
             LIMIT 1) AS r",
    )
    .bind(&campaigns)
    .bind(&keys)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(campaign, key, hash, journey, candidate)| {
            let reservation = Reservation {
                hash,
                journey,
                candidate,
            };
            ((campaign, key), reservation)
        })
        .collect())
}

/// Claims the fingerprints of every active referral and finds each one's primary: the journey
/// of the same person in the study that holds one of its fingerprints (the first in fingerprint
/// order), as the one-by-one path did. Within the group, an earlier claim wins a fingerprint, and
/// a referral whose primary is itself a duplicate takes that one's primary.
async fn claim_fingerprints(
    conn: &mut PgConnection,
    claims: &[Claim],
    active: &mut [Active],
) -> Result<(), sqlx::Error> {
    let mut rows: Vec<(Uuid, &[u8], usize)> = active
        .iter()
        .enumerate()
        .flat_map(|(position, claim)| {
            let study = claims[claim.index].study_id;
            claims[claim.index]
                .prints
                .iter()
                .map(move |print| (study, print.as_slice(), position))
        })
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    rows.sort_unstable();
    let studies: Vec<Uuid> = rows.iter().map(|row| row.0).collect();
    let prints: Vec<&[u8]> = rows.iter().map(|row| row.1).collect();
    let journeys: Vec<Uuid> = rows.iter().map(|row| active[row.2].journey).collect();
    let candidates: Vec<Uuid> = rows.iter().map(|row| active[row.2].candidate).collect();
    sqlx::query(
        "INSERT INTO contact_fingerprints (study_id, fingerprint, journey_id, candidate_id)
         SELECT study_id, fingerprint, journey_id, candidate_id
         FROM unnest($1::uuid[], $2::bytea[], $3::uuid[], $4::uuid[]) WITH ORDINALITY
             AS f(study_id, fingerprint, journey_id, candidate_id, n)
         ORDER BY n
         ON CONFLICT (study_id, fingerprint) DO NOTHING",
    )
    .bind(&studies)
    .bind(&prints)
    .bind(&journeys)
    .bind(&candidates)
    .execute(&mut *conn)
    .await?;
    let owners: Vec<(Uuid, Vec<u8>, Uuid, Uuid)> = sqlx::query_as(
        // One primary-key probe per fingerprint (the LATERAL with LIMIT keeps the planner
        // from turning it into a hash join over the whole table, which it did: 4-5 ms per
        // group at 40,000 fingerprints, growing with the table).
        "SELECT c.study_id, c.fingerprint, c.journey_id, c.candidate_id
         FROM unnest($1::uuid[], $2::bytea[]) AS f(study_id, fingerprint)
         CROSS JOIN LATERAL (
             SELECT c.study_id, c.fingerprint, c.journey_id, c.candidate_id
             FROM contact_fingerprints c
             WHERE c.study_id = f.study_id AND c.fingerprint = f.fingerprint
             LIMIT 1) AS c",
    )
    .bind(&studies)
    .bind(&prints)
    .fetch_all(&mut *conn)
    .await?;
    let owners: HashMap<(Uuid, Vec<u8>), (Uuid, Uuid)> = owners
        .into_iter()
        .map(|(study, print, journey, candidate)| ((study, print), (journey, candidate)))
        .collect();

    // In claim order, so that a primary from this group is resolved before its duplicates.
    let mut resolved: HashMap<Uuid, (Uuid, Uuid)> = HashMap::new();
    for claim in active.iter_mut() {
        let request = &claims[claim.index];
        let mut prints: Vec<&Vec<u8>> = request.prints.iter().collect();
        prints.sort_unstable();
        let primary = prints.into_iter().find_map(|print| {
            owners
                .get(&(request.study_id, print.clone()))
                .filter(|(owner, _)| *owner != claim.journey)
                .copied()
        });
        claim.primary = primary.map(|(journey, candidate)| {
            resolved
                .get(&journey)
                .copied()
                .unwrap_or((journey, candidate))
        });
        if let Some(primary) = claim.primary {
            resolved.insert(claim.journey, primary);
        }
    }
    Ok(())
}

/// A primary journey and its candidate.
type Primary = (Uuid, Uuid);

/// A duplicate's fingerprints (a new e-mail of a known person) go to its primary, so a later
/// referral with only those is the same person too; its reservation names the primary's
/// candidate, so a retry answers with it.
async fn link_duplicates(
    conn: &mut PgConnection,
    claims: &[Claim],
    active: &[Active],
) -> Result<(), sqlx::Error> {
    let duplicates: Vec<(&Active, (Uuid, Uuid))> = active
        .iter()
        .filter_map(|claim| claim.primary.map(|primary| (claim, primary)))
        .collect();
    if duplicates.is_empty() {
        return Ok(());
    }
    // The duplicate's journey is new in this group, so the fingerprints it holds are among its
    // own: each is found by primary key (the table has no index on `journey_id`).
    let moved: Vec<(Uuid, &[u8], Uuid, Primary)> = duplicates
        .iter()
        .flat_map(|(claim, primary)| {
            let request = &claims[claim.index];
            request
                .prints
                .iter()
                .map(move |print| (request.study_id, print.as_slice(), claim.journey, *primary))
        })
        .collect();
    let studies: Vec<Uuid> = moved.iter().map(|row| row.0).collect();
    let prints: Vec<&[u8]> = moved.iter().map(|row| row.1).collect();
    let journeys: Vec<Uuid> = moved.iter().map(|row| row.2).collect();
    let primaries: Vec<Uuid> = moved.iter().map(|row| row.3.0).collect();
    let candidates: Vec<Uuid> = moved.iter().map(|row| row.3.1).collect();
    sqlx::query(
        "UPDATE contact_fingerprints c
         SET journey_id = d.primary_journey, candidate_id = d.primary_candidate
         FROM unnest($1::uuid[], $2::bytea[], $3::uuid[], $4::uuid[], $5::uuid[])
             AS d(study_id, fingerprint, journey_id, primary_journey, primary_candidate)
         WHERE c.study_id = d.study_id AND c.fingerprint = d.fingerprint
           AND c.journey_id = d.journey_id",
    )
    .bind(&studies)
    .bind(&prints)
    .bind(&journeys)
    .bind(&primaries)
    .bind(&candidates)
    .execute(&mut *conn)
    .await?;
    let campaigns: Vec<Uuid> = duplicates
        .iter()
        .map(|(claim, _)| claims[claim.index].campaign_id)
        .collect();
    let keys: Vec<&str> = duplicates
        .iter()
        .map(|(claim, _)| claims[claim.index].stored_key.as_str())
        .collect();
    let candidates: Vec<Uuid> = duplicates.iter().map(|(_, primary)| primary.1).collect();
    sqlx::query(
        "UPDATE referral_requests r SET candidate_id = d.candidate_id
         FROM unnest($1::uuid[], $2::text[], $3::uuid[])
             AS d(campaign_id, idempotency_key, candidate_id)
         WHERE r.campaign_id = d.campaign_id AND r.idempotency_key = d.idempotency_key
           AND r.candidate_id <> d.candidate_id",
    )
    .bind(&campaigns)
    .bind(&keys)
    .bind(&candidates)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records each journey's candidate, creates the keys of new candidates and reads every
/// candidate's key (`None`: erased).
async fn store_candidates(
    conn: &mut PgConnection,
    claims: &[Claim],
    active: &[Active],
) -> Result<HashMap<Uuid, Option<Vec<u8>>>, sqlx::Error> {
    if active.is_empty() {
        return Ok(HashMap::new());
    }
    let mut by_journey: Vec<&Active> = active.iter().collect();
    by_journey.sort_unstable_by_key(|claim| claim.journey);
    let final_candidate = |claim: &Active| {
        claim
            .primary
            .map_or(claim.candidate, |(_, candidate)| candidate)
    };
    let journeys: Vec<Uuid> = by_journey.iter().map(|claim| claim.journey).collect();
    let candidates: Vec<Uuid> = by_journey.iter().map(|c| final_candidate(c)).collect();
    let studies: Vec<Uuid> = by_journey
        .iter()
        .map(|claim| claims[claim.index].study_id)
        .collect();
    sqlx::query(
        "INSERT INTO candidate_journeys (journey_id, candidate_id, study_id)
         SELECT journey_id, candidate_id, study_id
         FROM unnest($1::uuid[], $2::uuid[], $3::uuid[]) WITH ORDINALITY
             AS j(journey_id, candidate_id, study_id, n)
         ORDER BY n
         ON CONFLICT (journey_id) DO UPDATE SET candidate_id = EXCLUDED.candidate_id",
    )
    .bind(&journeys)
    .bind(&candidates)
    .bind(&studies)
    .execute(&mut *conn)
    .await?;

    // A primary whose key is missing (its referral stopped half-way before keys were stored
    // with the rest) gets one now, as sealing on the one-by-one path did.
    let mut new_keys: Vec<(Uuid, &[u8])> = active
        .iter()
        .map(|claim| {
            (
                final_candidate(claim),
                claims[claim.index].fresh_key.as_slice(),
            )
        })
        .collect();
    new_keys.sort_unstable();
    new_keys.dedup_by_key(|(candidate, _)| *candidate);
    if !new_keys.is_empty() {
        let (ids, keys): (Vec<Uuid>, Vec<&[u8]>) = new_keys.into_iter().unzip();
        sqlx::query(
            "INSERT INTO candidate_keys (candidate_id, data_key)
             SELECT candidate_id, data_key
             FROM unnest($1::uuid[], $2::bytea[]) WITH ORDINALITY AS k(candidate_id, data_key, n)
             ORDER BY n
             ON CONFLICT (candidate_id) DO NOTHING",
        )
        .bind(&ids)
        .bind(&keys)
        .execute(&mut *conn)
        .await?;
    }
    let keys: Vec<(Uuid, Option<Vec<u8>>)> = sqlx::query_as(
        "SELECT candidate_id, data_key FROM candidate_keys WHERE candidate_id = ANY($1)",
    )
    .bind(&candidates)
    .fetch_all(&mut *conn)
    .await?;
    Ok(keys.into_iter().collect())
}
