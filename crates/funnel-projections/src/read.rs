//! Reading a read model: a read-only transaction whose `search_path` is the live generation's
//! schema, so that queries use unqualified table names and never see a generation half built.

use sqlx::{PgPool, Postgres, Transaction};

/// Why a read model cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadModelError {
    /// No generation of the read model is live yet (the projector has not started it).
    #[error("the read model `{0}` has no live generation yet")]
    NotReady(&'static str),
    #[error("PostgreSQL")]
    Database(#[from] sqlx::Error),
}

/// Opens read transactions on the live generation of a read model. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ReadModels {
    pool: PgPool,
}

impl ReadModels {
    #[must_use]
    pub const fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// A read-only transaction on the live generation of `name` (e.g. `study_funnel`). A
    /// switch to a rebuilt generation that commits meanwhile does not affect it: it keeps
    /// reading the generation it started on, whose schema is dropped only after it ends.
    ///
    /// # Errors
    /// [`ReadModelError::NotReady`] when no generation is live; PostgreSQL errors.
    #[tracing::instrument(name = "read_model", skip(self))]
    pub async fn read(
        &self,
        name: &'static str,
    ) -> Result<Transaction<'static, Postgres>, ReadModelError> {
        let mut tx = self.pool.begin().await?;
        // One snapshot for every query of the transaction: a report made of several queries
        // sees one position of the stream.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        // One round trip finds the live schema and makes it the transaction's search path.
        let schema: Option<String> = sqlx::query_scalar(
            "SELECT set_config('search_path', schema_name, true) \
             FROM projection_generations WHERE name = $1 AND state = 'live'",
        )
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        if schema.is_none() {
            return Err(ReadModelError::NotReady(name));
        }
        Ok(tx)
    }

    /// A read-write transaction whose `search_path` is the live generation's schema, then
    /// `public`: for operational state kept beside a read model (e.g. leases on work items,
    /// which live in `public` so that they survive a rebuild) that must lock read-model rows
    /// (`SELECT ... FOR UPDATE SKIP LOCKED`). It must not write the read model's own tables:
    /// only the projector does.
    ///
    /// # Errors
    /// [`ReadModelError::NotReady`] when no generation is live; PostgreSQL errors.
    #[tracing::instrument(name = "read_model_for_update", skip(self))]
    pub async fn read_write(
        &self,
        name: &'static str,
    ) -> Result<Transaction<'static, Postgres>, ReadModelError> {
        let mut tx = self.pool.begin().await?;
        // Generic plans: these are short keyed statements and the claim's index walk, run
        // many times a second; with custom plans PostgreSQL planned the claim afresh on every
        // call (0.6 ms of planning per claim in `pg_stat_statements`, more than a third of
        // its cost). Statistics updates still invalidate the plan.
        let schema: Option<String> = sqlx::query_scalar(
            "SELECT set_config('search_path', schema_name || ', public', true), \
             set_config('plan_cache_mode', 'force_generic_plan', true) \
             FROM projection_generations WHERE name = $1 AND state = 'live'",
        )
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        if schema.is_none() {
            return Err(ReadModelError::NotReady(name));
        }
        Ok(tx)
    }
}
