//! PostgreSQL: the schema (`migrations/`), the batch writer, checkpoints and the queries the API
//! serves.
//!
//! Effectively-once (docs/guarantees.md): one transaction per batch advances the source's offsets in
//! `kafka_offsets` (and, on the checkpoint interval, stores every stage's state with the offsets it
//! includes); every row carries its message's source, partition and offset. A replayed message is
//! a no-op: its reading is stored only when its offset is past its partition's stored position,
//! read in the batch's transaction (`writer::StoredPositions`); its other rows are keyed by their
//! message (`ON CONFLICT DO NOTHING`), and a window revision emitted again (a partition's partial of
//! the window, migration 0010) replaces its earlier emission.
//!
//! The store knows rows, not plugins: what the pipeline hands it is plain data ([`rows`]).
//!
//! # Layout
//! * this module: [`Store`] (the pool, connecting, migrating) and [`StoreError`];
//! * [`rows`]: what one batch writes ([`BatchRows`]) and the row counts ([`Totals`]);
//! * `writer`: [`Store::write`], the batch's one transaction; `copy`: its new readings in binary
//!   `COPY`; `isolate`: the same when the database refuses part of it for good (a poison row costs
//!   only itself); [`order`]: batches written side by side, committed in order;
//! * [`models`]: the detector versions and models stored verdicts name (`detector_models`);
//! * [`checkpoints`]: a lane's (a partition's) stage states with the position they include;
//! * `sources`: the `kafka_sources` registry (a source's epochs), stored positions and the batch
//!   log of each lane;
//! * [`partitions`]: the day partitions of `sensor_readings` and `dead_letters`, made ahead and
//!   dropped past retention;
//! * [`ownership`]: one host per partition (`partition_owners`, counted up by a host given the
//!   partition, and the fence its batch transactions check);
//! * [`cluster`]: the operational view of hosts sharing a topic (rebalances, lag reports);
//! * `queries`: what the API and the live view read.

pub mod checkpoints;
pub mod cluster;
mod copy;
mod isolate;
pub mod models;
pub mod order;
pub mod ownership;
pub mod partitions;
mod queries;
pub mod rows;
mod sources;
mod writer;

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use iotstream_api::OutageCode;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tracing::warn;

pub use self::checkpoints::{Checkpoint, CheckpointReason, StageState};
pub use self::cluster::Rebalance;
pub use self::isolate::{ReadingsPath, Refused, RefusedOrigin, Written, is_permanent};
pub use self::ownership::{Fence, PartitionOwner};
pub use self::queries::{HistoryFilter, RECENT_PREDICTIONS, RECENT_READINGS};
pub use self::rows::{
    BatchRows, DeadLetter, LaneBatch, ModelLineage, Prediction, ShadowPrediction, StoredReading, StoredWindow, Totals,
};
pub use self::sources::SourceIds;

/// The schema, embedded from `migrations/` at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Connections of the pipeline's own pool with `writers` transactions a batch and
/// `batches_in_flight` batches: one for every transaction in flight, so that no batch waits for a
/// connection another batch holds while it waits for that batch, one for a start-up, partition or
/// checkpoint query or a batch's windows merged again beside them, and room for a reconnect. The
/// API has a pool of its own, so no query can starve the pipeline. (PostgreSQL's
/// `max_connections` must allow them: 6 with the defaults on two cores.)
pub fn pipeline_connections(writers: usize, batches_in_flight: usize) -> u32 {
    u32::try_from(writers.max(1).saturating_mul(batches_in_flight.max(1)).saturating_add(2)).unwrap_or(u32::MAX)
}
/// Connections of the API's pool: concurrent queries beyond it wait for one (bounded by
/// [`ACQUIRE_TIMEOUT`], then answered 503).
const API_CONNECTIONS: u32 = 4;
/// How long one API query may run before PostgreSQL cancels it: the dashboard's queries take
/// milliseconds; a query this slow is one nobody should wait for.
pub const API_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a query waits for a free connection before it fails (and the pipeline retries).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// How many times [`Store::connect`] tries, backing off up to 5 s: about a minute, long enough for
/// a database that docker-compose starts beside the host.
const CONNECT_ATTEMPTS: usize = 15;

/// Why a database operation failed. Every case is retryable from the pipeline's point of view: a
/// write the database refuses for good is isolated by [`Store::write`] instead of returned.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached at start-up.
    #[error("cannot connect to PostgreSQL at {server}: {source}")]
    Connect {
        /// Host, port and database (never the password).
        server: String,
        /// Why.
        source: sqlx::Error,
    },
    /// A query or the connection failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A batch transaction found that another host took one of this host's partitions over (the
    /// group gave it away while this host ran on). Not retried: the pipeline stops.
    #[error(
        "another host took partition {partition} of source {lineage} over (ownership {current}; this host's was {generation})"
    )]
    NotOwner {
        /// The source's first id.
        lineage: i16,
        /// The partition.
        partition: i32,
        /// The ownership count this host set.
        generation: i64,
        /// The count found: the new owner's.
        current: i64,
    },
    /// The batch before this one was not stored (the host stops), so this one is not either: a
    /// batch commits only after every batch before it ([`order`]). Not retried.
    #[error("not stored: the batch before it was not stored, and a batch commits only after the one before it")]
    EarlierNotStored,
    /// Another transaction stored some of the batch's messages while this one wrote them (an
    /// attempt beside the first one's commit, whose answer was lost): rolled back, and retried,
    /// when the batch's positions say which are stored (`writer::StoredPositions::claim`).
    #[error(
        "partition {partition}'s messages up to offset {position} were stored beside this attempt; writing the batch again"
    )]
    StoredMeanwhile {
        /// The partition.
        partition: i32,
        /// Its position now.
        position: i64,
    },
}

impl StoreError {
    /// The outage the API reports for this error (the error itself is logged, never served).
    pub fn outage(&self) -> OutageCode {
        match self {
            StoreError::Connect { .. }
            | StoreError::Database(
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_),
            ) => OutageCode::DatabaseUnreachable,
            // With TLS built in, a connection (`sslmode=prefer`, the default) opens with an
            // SSLRequest: a server gone away answers it with nothing, which sqlx reports as a
            // protocol error. That is an unreachable server, not a database error.
            StoreError::Database(sqlx::Error::Protocol(message)) if message.contains("SSLRequest") => {
                OutageCode::DatabaseUnreachable
            }
            _ => OutageCode::DatabaseError,
        }
    }
}

/// The server `options` name, for messages: host, port and database, never the user's password
/// (whether the URL carried it as `user:password@` or as `?password=`).
fn server_name(options: &PgConnectOptions) -> String {
    format!("{}:{}/{}", options.get_host(), options.get_port(), options.get_database().unwrap_or_default())
}

/// Writes batches and answers the API's queries.
#[derive(Debug, Clone)]
pub struct Store {
    /// The pipeline's connections: batch writes, checkpoints, positions.
    pool: PgPool,
    /// The API's connections, each with [`API_STATEMENT_TIMEOUT`].
    api_pool: PgPool,
    /// The day partitions known to exist (shared by this store's clones).
    known_partitions: partitions::KnownPartitions,
    /// The detector models this store has stored (shared by its clones).
    known_models: models::KnownModels,
}

impl Store {
    /// Connects to the database `options` name, retrying for about a minute (in docker-compose the
    /// database may start after iotstream), and brings its schema up to date: the start-up path of
    /// every command that writes. The pipeline's pool holds `connections` (see
    /// [`pipeline_connections`]).
    pub async fn connect(options: PgConnectOptions, connections: u32) -> Result<Self, StoreError> {
        let attempt = || {
            PgPoolOptions::new()
                .max_connections(connections)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options.clone())
        };
        let backoff =
            ExponentialBuilder::default().with_max_delay(Duration::from_secs(5)).with_max_times(CONNECT_ATTEMPTS);
        let server = server_name(&options);
        let pool = attempt
            .retry(backoff)
            .notify(|err, delay| warn!(error = %err, retry_in = ?delay, %server, "database not reachable yet"))
            .await
            .map_err(|source| StoreError::Connect { server, source })?;
        let timeout = format!("{}ms", API_STATEMENT_TIMEOUT.as_millis());
        // Lazy: the API's connections open as it is queried.
        let api_pool = PgPoolOptions::new()
            .max_connections(API_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // Custom plans always: the API's queries have optional filters (`$1 IS NULL OR
            // column = $1`), and a generic plan, which PostgreSQL switches to after five runs on a
            // connection, can use neither the filter's index nor plan-time partition pruning (a
            // week of one sensor: 0.1-0.5 s with a custom plan, past the timeout without, on 100
            // million readings).
            .connect_lazy_with(
                options.options([("statement_timeout", timeout.as_str()), ("plan_cache_mode", "force_custom_plan")]),
            );
        let store = Store { pool, api_pool, known_partitions: Default::default(), known_models: Default::default() };
        store.migrate().await?;
        Ok(store)
    }

    /// A store whose pipeline and API share `pool` (tests; [`Store::connect`] gives each its own);
    /// call [`Store::migrate`] before the first write.
    pub fn new(pool: PgPool) -> Self {
        Store { api_pool: pool.clone(), pool, known_partitions: Default::default(), known_models: Default::default() }
    }

    /// The API's pool.
    pub fn api_pool(&self) -> &PgPool {
        &self.api_pool
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Brings the schema up to date.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_server_without_the_password() {
        for url in
            ["postgres://iot:s3cret@db.example:6543/iot_db", "postgres://iot@db.example:6543/iot_db?password=s3cret"]
        {
            let options: PgConnectOptions = url.parse().expect("valid URL");
            assert_eq!(server_name(&options), "db.example:6543/iot_db", "{url}");
        }
    }
}
