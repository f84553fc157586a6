//! Generations of a read model: each lives in a PostgreSQL schema of its own
//! (`rm_<name>_g<generation>`), has its own checkpoint in `projection_generations`, and is
//! `building`, `live` or `retired`. Readers use the live one; a rebuild fills a building one
//! beside it and switches readers over once it has caught up.

use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row};

use crate::projection::DynProjection;

/// The lifecycle state of a generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GenerationState {
    /// Catching up from position 1 beside the live generation; not read.
    Building,
    /// Read by queries.
    Live,
    /// Replaced by a newer generation; its schema is dropped after a grace period.
    Retired,
}

impl GenerationState {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Building => "building",
            Self::Live => "live",
            Self::Retired => "retired",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "building" => Self::Building,
            "live" => Self::Live,
            _ => Self::Retired,
        }
    }
}

/// One generation as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generation {
    pub name: String,
    pub generation: i32,
    pub version: u32,
    pub schema: String,
    pub state: GenerationState,
}

impl Generation {
    fn from_row(row: &sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            name: row.try_get("name")?,
            generation: row.try_get("generation")?,
            version: u32::try_from(row.try_get::<i32, _>("version")?).unwrap_or(0),
            schema: row.try_get("schema_name")?,
            state: GenerationState::parse(&row.try_get::<String, _>("state")?),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GenerationError {
    #[error("PostgreSQL")]
    Database(#[from] sqlx::Error),
    #[error("there is no projection called `{0}`")]
    Unknown(String),
    #[error("a projection name must be lower-case letters, digits and underscores, not `{0}`")]
    BadName(String),
    #[error(
        "generation {generation} of `{name}` is already building; watch it with `funnel projections status`"
    )]
    AlreadyBuilding { name: String, generation: i32 },
}

/// The session-lock key under which one instance runs a generation.
pub(crate) fn lock_key(name: &str, generation: i32) -> String {
    format!("funnel.projection.{name}.g{generation}")
}

fn schema_name(name: &str, generation: i32) -> Result<String, GenerationError> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && name.as_bytes()[0].is_ascii_lowercase();
    if valid {
        Ok(format!("rm_{name}_g{generation}"))
    } else {
        Err(GenerationError::BadName(name.to_owned()))
    }
}

/// The generations of `name` that are not retired.
pub(crate) async fn active(
    conn: &mut PgConnection,
    name: &str,
) -> Result<Vec<Generation>, sqlx::Error> {
    sqlx::query(concat!(
        "SELECT name, generation, version, schema_name, state FROM projection_generations ",
        "WHERE name = $1 AND state <> 'retired' ORDER BY generation"
    ))
    .bind(name)
    .fetch_all(conn)
    .await?
    .iter()
    .map(Generation::from_row)
    .collect()
}

/// Creates the next generation of `projection` in `state`: its row, its schema and its tables,
/// in the caller's transaction.
async fn create(
    conn: &mut PgConnection,
    projection: &dyn DynProjection,
    state: GenerationState,
) -> Result<Generation, GenerationError> {
    let name = projection.name();
    let next: i32 = sqlx::query_scalar(
        "SELECT COALESCE(max(generation), 0) + 1 FROM projection_generations WHERE name = $1",
    )
    .bind(name)
    .fetch_one(&mut *conn)
    .await?;
    let schema = schema_name(name, next)?;
    sqlx::query(
        "INSERT INTO projection_generations (name, generation, version, schema_name, state) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(name)
    .bind(next)
    .bind(i32::try_from(projection.version()).unwrap_or(i32::MAX))
    .bind(&schema)
    .bind(state.as_str())
    .execute(&mut *conn)
    .await?;
    // The schema name is built from a validated name and a number: safe to put in the text.
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut *conn)
        .await?;
    sqlx::query("SELECT set_config('search_path', $1, true)")
        .bind(&schema)
        .execute(&mut *conn)
        .await?;
    sqlx::raw_sql(AssertSqlSafe(projection.schema()))
        .execute(&mut *conn)
        .await?;
    sqlx::query("SELECT set_config('search_path', 'public', true)")
        .execute(&mut *conn)
        .await?;
    tracing::info!(
        projection = name,
        generation = next,
        version = projection.version(),
        state = state.as_str(),
        %schema,
        "created a read-model generation"
    );
    Ok(Generation {
        name: name.to_owned(),
        generation: next,
        version: projection.version(),
        schema,
        state,
    })
}

/// Serialises generation changes of one read model across instances, for the transaction.
async fn lock_setup(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("funnel.projection.{name}.setup"))
        .execute(conn)
        .await?;
    Ok(())
}

/// Makes sure `projection` has a generation built by its current logic version:
/// * none at all (first start): a new one, live at once (there is nothing better to read);
/// * a live one of another version (a release changed the logic): a new building one, while
///   readers keep the old until the new has caught up;
/// * a building one of an older version (left by an earlier release): retired and replaced.
///
/// Returns the generations that are not retired.
pub(crate) async fn ensure(
    pool: &PgPool,
    projection: &dyn DynProjection,
) -> Result<Vec<Generation>, GenerationError> {
    let name = projection.name();
    let version = projection.version();
    let mut tx = pool.begin().await?;
    lock_setup(&mut tx, name).await?;
    let mut current = active(&mut tx, name).await?;
    let live = current.iter().find(|g| g.state == GenerationState::Live);
    let building = current
        .iter()
        .find(|g| g.state == GenerationState::Building);
    let changed = match (live, building) {
        (None, None) => {
            create(&mut tx, projection, GenerationState::Live).await?;
            true
        }
        (Some(live), None) if live.version < version => {
            create(&mut tx, projection, GenerationState::Building).await?;
            true
        }
        (_, Some(building)) if building.version < version => {
            sqlx::query(
                "UPDATE projection_generations SET state = 'retired', retired_at = now() \
                 WHERE name = $1 AND generation = $2",
            )
            .bind(name)
            .bind(building.generation)
            .execute(&mut *tx)
            .await?;
            create(&mut tx, projection, GenerationState::Building).await?;
            true
        }
        // Ours is there, or a newer release owns the read model now.
        _ => false,
    };
    if changed {
        current = active(&mut tx, name).await?;
    }
    tx.commit().await?;
    Ok(current)
}

/// Starts a rebuild of `projection`: a new generation, built by the current logic version
/// from position 1 beside the live one. The projector switches readers over to it once it has
/// caught up.
///
/// # Errors
/// [`GenerationError::AlreadyBuilding`] when a rebuild is already under way.
pub(crate) async fn start_rebuild(
    pool: &PgPool,
    projection: &dyn DynProjection,
) -> Result<Generation, GenerationError> {
    let name = projection.name();
    let mut tx = pool.begin().await?;
    lock_setup(&mut tx, name).await?;
    let current = active(&mut tx, name).await?;
    if let Some(building) = current
        .iter()
        .find(|g| g.state == GenerationState::Building)
    {
        return Err(GenerationError::AlreadyBuilding {
            name: name.to_owned(),
            generation: building.generation,
        });
    }
    let state = if current.is_empty() {
        GenerationState::Live
    } else {
        GenerationState::Building
    };
    let generation = create(&mut tx, projection, state).await?;
    tx.commit().await?;
    Ok(generation)
}

/// Switches readers from the live generation to the building `generation` if it has caught
/// up with it (its position is at least the live one's, so that no reader ever sees the
/// funnel go back in time). Returns whether it switched.
pub(crate) async fn try_switch(
    conn: &mut PgConnection,
    name: &str,
    generation: i32,
) -> Result<bool, sqlx::Error> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    lock_setup(&mut tx, name).await?;
    let rows = sqlx::query(
        // Locks both rows: the live generation's worker cannot move on meanwhile, and once
        // this commits its next checkpoint update finds it retired and stops.
        "SELECT generation, state, position FROM projection_generations \
         WHERE name = $1 AND state IN ('live', 'building') FOR UPDATE",
    )
    .bind(name)
    .fetch_all(&mut *tx)
    .await?;
    let mut ours = None;
    let mut live = None;
    for row in &rows {
        let number: i32 = row.try_get("generation")?;
        let state: String = row.try_get("state")?;
        let position: i64 = row.try_get("position")?;
        if number == generation && state == "building" {
            ours = Some(position);
        } else if state == "live" {
            live = Some((number, position));
        }
    }
    let Some(position) = ours else {
        return Ok(false);
    };
    if live.is_some_and(|(_, live_position)| live_position > position) {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE projection_generations SET state = 'retired', retired_at = now() \
         WHERE name = $1 AND state = 'live'",
    )
    .bind(name)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE projection_generations SET state = 'live', live_since = now() \
         WHERE name = $1 AND generation = $2",
    )
    .bind(name)
    .bind(generation)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(
        projection = name,
        generation,
        position,
        replaced = live.map(|(number, _)| number),
        "a rebuilt generation caught up; readers switched to it"
    );
    Ok(true)
}

/// Drops the schemas of generations retired more than `grace` ago (readers that started on a
/// generation just before the switch have that long to finish). A generation whose lock is
/// still held (its worker has not noticed yet) is left for the next round.
pub(crate) async fn drop_retired(
    pool: &PgPool,
    name: &str,
    grace: std::time::Duration,
) -> Result<(), sqlx::Error> {
    let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
    let retired: Vec<(i32, String)> = sqlx::query_as(
        "SELECT generation, schema_name FROM projection_generations \
         WHERE name = $1 AND state = 'retired' AND dropped_at IS NULL \
         AND retired_at < now() - make_interval(secs => $2::double precision / 1000)",
    )
    .bind(name)
    .bind(grace_ms)
    .fetch_all(pool)
    .await?;
    for (generation, schema) in retired {
        let mut tx = pool.begin().await?;
        let free: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(lock_key(name, generation))
                .fetch_one(&mut *tx)
                .await?;
        if !free {
            continue;
        }
        // The schema name was generated by `create` from a validated name.
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE"
        )))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE projection_generations SET dropped_at = now() \
             WHERE name = $1 AND generation = $2",
        )
        .bind(name)
        .bind(generation)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(projection = name, generation, %schema, "dropped a retired generation");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_come_only_from_safe_names() {
        assert_eq!(
            schema_name("sponsor_dashboard", 3).expect("valid"),
            "rm_sponsor_dashboard_g3"
        );
        for bad in ["", "Study", "a-b", "x; DROP TABLE y", "1abc", "a b"] {
            assert!(schema_name(bad, 1).is_err(), "{bad}");
        }
    }
}
