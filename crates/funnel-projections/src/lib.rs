//! Projections: the runtime that turns the stream into PostgreSQL read models, and the read
//! models themselves.
//!
//! # The runtime ([`Projector`])
//!
//! Every [`Projection`] (a read model with a `name` and a logic `version`) runs as a task of
//! its own:
//!
//! * **Generations.** A read model's tables live in a PostgreSQL schema per *generation*
//!   (`rm_<name>_g<n>`, created from [`Projection::schema`]); `projection_generations` holds
//!   each generation's logic version, state (`building`, `live`, `retired`) and checkpoint.
//!   Readers ([`ReadModels::read`]) open a read-only, repeatable-read transaction whose
//!   `search_path` is the live generation's schema. A rebuild ([`Projector::start_rebuild`],
//!   `funnel projections rebuild NAME`) creates a `building` generation that fills from
//!   position 1 beside the live one; once its position has reached the live one's, one
//!   transaction makes it live and retires the old one (readers never see the funnel go back
//!   in time, and never an empty or half-built one). A retired generation's worker stops and
//!   its schema is dropped after [`ProjectorSettings::retired_grace`]. When a release bumps a
//!   projection's [`Projection::version`], the projector starts such a rebuild by itself and
//!   readers keep the old generation until the new one has caught up.
//! * **Checkpoints.** A generation's position (the stream sequence of the last event applied)
//!   is stored in its `projection_generations` row. It reads the stream from `position + 1`,
//!   gathers a batch (up to [`ProjectorSettings::max_batch_events`], or whatever arrived within
//!   [`ProjectorSettings::batch_linger`] of the first event), and applies the batch *and* moves
//!   the position in **one PostgreSQL transaction**: each event takes effect exactly once, and a
//!   restart resumes from the stored position. The checkpoint update is also conditional on the
//!   position it started from, so even a broken lock could not apply an event twice: the second
//!   writer's transaction finds the position moved and rolls back.
//! * **One holder per generation.** Several service instances may run the same projections.
//!   Each generation is applied by whoever holds a session-level PostgreSQL advisory lock,
//!   `pg_try_advisory_lock(hashtextextended('funnel.projection.<name>.g<generation>', 0))`, on a
//!   connection of its own (detached from the pool). Only the holder runs the projection, and
//!   all of its transactions run on that same connection, so nothing can be written once the
//!   session (and with it the lock) is gone. The other instances poll for the lock every
//!   [`ProjectorSettings::lock_poll`] and take over when the holder shuts down or dies (PostgreSQL
//!   releases a session lock when the session ends).
//! * **Stopping loudly.** An event the projection cannot apply (it does not decode, or `apply`
//!   returns a non-transient error) stops that projection: the events before it in the batch
//!   are committed, the checkpoint gets `status = 'failed'` and `last_error` (the cause chain),
//!   an error is logged with the cause chain, `funnel_projection_failed` is set to 1, and the
//!   event is never skipped. The failed projection keeps its lock until shutdown; when the
//!   service starts again it tries that event once more (a new release may be able to apply it).
//! * **Transient failures** (NATS or PostgreSQL unavailable, connection lost) roll back the
//!   batch in flight; the projection backs off ([`ProjectorSettings::min_backoff`] doubling up to
//!   [`ProjectorSettings::max_backoff`]), takes its lock again, re-reads its checkpoint and
//!   resubscribes from the stored position.
//! * **Shutdown.** [`Projector::run`] takes a shutdown future; when it completes, each
//!   projection finishes (commits) the batch in flight, closes its session and returns.
//!
//! # Metrics
//!
//! Registered on the [`prometheus::Registry`] passed to [`Projector::new`], labelled
//! `projection` and `generation` (retries: `projection` only): `funnel_projection_position`, `funnel_projection_lag_events` (stream head −
//! position), `funnel_projection_lag_seconds` (now − time of the last applied event, while
//! behind), `funnel_projection_events_applied_total`, `funnel_projection_failed` (0/1) and
//! `funnel_projection_retries_total`. [`status`] (and [`Projector::status`]) report the stored
//! generations with their lag, for `funnel projections status`; `/ready` fails while a
//! generation has stopped.
//!
//! # Read models
//!
//! * [`SponsorDashboard`] (`sponsor_dashboard`): the sponsor dashboards' facts and their
//!   queries ([`dashboard`]).
//! * [`WorkQueue`] (`work_queue`): the Enrollment Support Team's open work items, derived from
//!   journeys, SLA settings and time ([`queue`]; rules in `docs/work-queues.md`).
//! * [`StudyFunnel`] (`study_funnel`): journeys per study × site × stage now, referrals per
//!   study × source channel. The smallest complete read model: the runtime's own tests use it;
//!   the service does not run it (the dashboard covers it).
//!

pub mod dashboard;
mod generation;
mod metrics;
mod projection;
pub mod queue;
mod read;
mod runtime;
mod status;
pub mod study_funnel;

pub use dashboard::SponsorDashboard;
pub use generation::{Generation, GenerationError, GenerationState};
pub use projection::{ProjectedEvent, Projection, ProjectionError};
pub use queue::WorkQueue;
pub use read::{ReadModelError, ReadModels};
pub use runtime::{DEFAULT_MAX_BATCH_EVENTS, Projector, ProjectorSettings};
pub use status::{ProjectionStatus, StatusError, status};
pub use study_funnel::StudyFunnel;
