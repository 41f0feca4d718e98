//! Who owns a source. One host at a time may read a source, run its stateful stages and write its
//! positions, batch log and checkpoints: two would each assign themselves every partition and
//! overwrite each other's batch log and checkpoints, and a restart would restore a state neither
//! had. Until hosts share a source's partitions, the owner holds a PostgreSQL advisory lock on a
//! connection of its own for as long as its pipeline runs; another host on the same source waits.
//!
//! The lock alone is no fence: its connection can end (the server restarted, a session killed by
//! an administrator, a database outage) while the old owner goes on writing. So an owner counts its
//! ownership up once it holds the lock (`kafka_sources.owner_generation` of the source's first row),
//! and every batch transaction takes the source's fence key shared and checks the count is still
//! its own ([`Fence`]); a new owner, once it holds the lock, takes the fence key exclusively once,
//! which waits for every transaction the old owner started, then counts up. An owner whose lock
//! session merely ended (an outage) writes on; one that another host took over from is refused.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::pool::PoolConnection;
use sqlx::postgres::Postgres;

use crate::store::{Store, StoreError};

/// The advisory-lock class of source ownership (the first key of PostgreSQL's two-key form; the
/// second is the source's first id): "iots" in ASCII, recognisable in `pg_locks`, and unlikely to
/// collide with another application's locks on the same database.
const OWNER_CLASS: i32 = 0x696f_7473;
/// The class of the fence every batch transaction takes shared ("iotf").
const FENCE_CLASS: i32 = 0x696f_7466;

/// Ownership of a source, held while this value lives (dropping it closes its connection, which
/// releases the lock).
#[derive(Debug)]
pub struct SourceLock {
    _connection: PgConnection,
    fence: Fence,
}

impl SourceLock {
    /// What every batch transaction of the owner checks.
    pub fn fence(&self) -> Fence {
        self.fence
    }
}

/// A source's owner as its batch transactions prove it: the source's lock key, the database
/// session (backend pid) that took the lock, and the ownership count it set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    /// The source's first id (the lock's second key).
    pub source: i16,
    /// The backend pid of the lock's connection.
    pub pid: i32,
    /// The source's `owner_generation` this owner set when it took the source.
    pub generation: i64,
}

/// The database session holding a source's lock, as `pg_stat_activity` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its backend pid.
    pub pid: i32,
    /// The client's address (none over a Unix socket).
    pub client: Option<String>,
    /// When its session began.
    pub since: Option<DateTime<Utc>>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "database session {} from {}", self.pid, self.client.as_deref().unwrap_or("a local socket"))?;
        if let Some(since) = self.since {
            write!(f, " since {}", since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))?;
        }
        Ok(())
    }
}

/// What one attempt to own a source found.
#[derive(Debug)]
pub enum Ownership {
    /// This host owns it now.
    Owned(SourceLock),
    /// Another session holds it (`None`: it let go between the attempt and the look-up).
    HeldBy(Option<Holder>),
}

impl Store {
    /// Tries once to own the source whose first id is `source`: on success, waits for the
    /// transactions a previous owner started under its lock to end, and keeps the connection.
    pub async fn try_own_source(&self, source: i16) -> Result<Ownership, StoreError> {
        let mut connection: PoolConnection<Postgres> = self.pool.acquire().await?;
        let (pid, owned): (i32, bool) = sqlx::query_as("SELECT pg_backend_pid(), pg_try_advisory_lock($1, $2)")
            .bind(OWNER_CLASS)
            .bind(i32::from(source))
            .fetch_one(&mut *connection)
            .await?;
        if !owned {
            drop(connection);
            return Ok(Ownership::HeldBy(self.source_holder(source).await?));
        }
        // The lock's session lives as long as the lock: out of the pool, never handed to a query.
        let mut connection = connection.detach();
        // The fence key exclusively: waits for every batch transaction an old owner started; the
        // count goes up (committed) before any transaction started later can read it.
        sqlx::query("SELECT pg_advisory_lock($1, $2)")
            .bind(FENCE_CLASS)
            .bind(i32::from(source))
            .execute(&mut connection)
            .await?;
        let generation: i64 = sqlx::query_scalar(
            "UPDATE kafka_sources SET owner_generation = owner_generation + 1 WHERE id = $1 RETURNING owner_generation",
        )
        .bind(source)
        .fetch_one(&mut connection)
        .await?;
        sqlx::query("SELECT pg_advisory_unlock($1, $2)")
            .bind(FENCE_CLASS)
            .bind(i32::from(source))
            .execute(&mut connection)
            .await?;
        Ok(Ownership::Owned(SourceLock { _connection: connection, fence: Fence { source, pid, generation } }))
    }

    /// The session holding the lock of the source whose first id is `source`, if any.
    pub async fn source_holder(&self, source: i16) -> Result<Option<Holder>, StoreError> {
        let holder: Option<(i32, Option<String>, Option<DateTime<Utc>>)> = sqlx::query_as(
            "SELECT a.pid, host(a.client_addr), a.backend_start FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database \
             WHERE datname = current_database()) AND l.classid = $1::int8::oid AND l.objid = $2::int8::oid \
             AND l.objsubid = 2",
        )
        .bind(i64::from(OWNER_CLASS))
        .bind(i64::from(source))
        .fetch_optional(&self.pool)
        .await?;
        Ok(holder.map(|(pid, client, since)| Holder { pid, client, since }))
    }
}

impl Fence {
    /// Within a batch transaction: takes the fence key shared (a new owner waits for this
    /// transaction before it counts up) and checks the source's ownership count is still this
    /// owner's; [`StoreError::NotOwner`] if another host took the source over since.
    pub(super) async fn check(&self, tx: &mut PgConnection) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock_shared($1, $2)")
            .bind(FENCE_CLASS)
            .bind(i32::from(self.source))
            .execute(&mut *tx)
            .await?;
        let current: i64 = sqlx::query_scalar("SELECT owner_generation FROM kafka_sources WHERE id = $1")
            .bind(self.source)
            .fetch_one(&mut *tx)
            .await?;
        if current == self.generation {
            Ok(())
        } else {
            Err(StoreError::NotOwner { lineage: self.source, generation: self.generation, current })
        }
    }
}
