//! One connection type over the three Redis topologies the store runs on — a single
//! server, a Redis Cluster, a Sentinel-managed primary — so the store's commands and
//! scripts are written once.
//!
//! - **single**: redis-rs's `ConnectionManager` (reconnects by itself).
//! - **cluster**: redis-rs's async cluster client: it follows `MOVED`/`ASK` and learns a
//!   failover from the cluster itself; response and connection timeouts are the command
//!   timeout, which also bounds a request's retries in all.
//! - **sentinel**: a multiplexed connection to the primary the sentinels name. A
//!   connection error or `READONLY` (the node was demoted) drops it, and the next request
//!   asks the sentinels again; a `READONLY` refusal wrote nothing, so it is retried once
//!   on the new primary. Nothing else is retried: a command that may have run is never
//!   sent twice.
//!
//! Every request is bounded by the connection's deadline, whatever the topology's own
//! retries do: a failover turns writes into clear errors, never into a hang.

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisConnectionInfo, RedisError, RedisFuture, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where the store's data lives.
#[derive(Clone)]
pub enum RedisTopology {
    /// One server (`redis://host:port/db`).
    Single { url: String },
    /// A Redis Cluster, found from these seed nodes.
    Cluster { urls: Vec<String> },
    /// The primary the sentinels monitor under `master_name`.
    Sentinel {
        /// `sentinel monitor <master_name> …`.
        master_name: String,
        /// The sentinels' URLs (their own credentials, if any, in the URL).
        sentinels: Vec<String>,
        /// Data nodes' username (ACL), if any.
        username: Option<String>,
        /// Data nodes' password, if any.
        password: Option<String>,
        /// Data nodes' database.
        db: i64,
    },
}

impl RedisTopology {
    /// `single`, `cluster` or `sentinel` (logs, readiness).
    pub fn name(&self) -> &'static str {
        match self {
            RedisTopology::Single { .. } => "single",
            RedisTopology::Cluster { .. } => "cluster",
            RedisTopology::Sentinel { .. } => "sentinel",
        }
    }
}

impl std::fmt::Debug for RedisTopology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // URLs and passwords may carry secrets: only the shape is printed.
        match self {
            RedisTopology::Single { .. } => f.write_str("Single"),
            RedisTopology::Cluster { urls } => write!(f, "Cluster({} seed nodes)", urls.len()),
            RedisTopology::Sentinel { master_name, sentinels, .. } => {
                write!(f, "Sentinel({master_name}, {} sentinels)", sentinels.len())
            }
        }
    }
}

/// Opens connections of one topology.
pub(super) enum Connector {
    Single(Client),
    Cluster(ClusterClient),
    Sentinel {
        /// What a new sentinel client is built from (one per blocking connection).
        sentinels: Vec<String>,
        master_name: String,
        node: SentinelNodeConnectionInfo,
        /// The primary connection the store's ordinary commands share.
        shared: Arc<SentinelShared>,
    },
}

impl Connector {
    /// Checks the topology's URLs; connects nothing.
    pub(super) fn new(topology: &RedisTopology) -> Result<Connector, RedisError> {
        Ok(match topology {
            RedisTopology::Single { url } => Connector::Single(Client::open(url.as_str())?),
            RedisTopology::Cluster { urls } => Connector::Cluster(ClusterClient::builder(urls.clone()).build()?),
            RedisTopology::Sentinel { master_name, sentinels, username, password, db } => {
                let mut info = RedisConnectionInfo::default().set_db(*db);
                if let Some(username) = username {
                    info = info.set_username(username);
                }
                if let Some(password) = password {
                    info = info.set_password(password);
                }
                let node = SentinelNodeConnectionInfo::default().set_redis_connection_info(info);
                let shared = SentinelShared::new(sentinels, master_name, &node)?;
                Connector::Sentinel { sentinels: sentinels.clone(), master_name: master_name.clone(), node, shared }
            }
        })
    }

    /// A long-lived connection whose requests each take at most `timeout`; connects on
    /// first use, so an unreachable Redis at start-up is an outage, not a crash.
    pub(super) fn connect(&self, timeout: Duration) -> Result<Conn, RedisError> {
        let inner = match self {
            Connector::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                Inner::Single(ConnectionManager::new_lazy_with_config(client.clone(), config)?)
            }
            Connector::Cluster(client) => Inner::Cluster(ClusterConn::new(client, timeout)),
            Connector::Sentinel { shared, .. } => Inner::Sentinel(SentinelConn::new(shared, timeout)),
        };
        Ok(Conn { inner, timeout })
    }

    /// A connection for blocking reads (`XREAD BLOCK`), which would stall every command
    /// multiplexed behind them on a shared one.
    pub(super) async fn connect_blocking(&self, timeout: Duration) -> Result<Conn, RedisError> {
        let inner = match self {
            Connector::Single(client) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout));
                Inner::Multiplexed(client.get_multiplexed_async_connection_with_config(&config).await?)
            }
            Connector::Cluster(client) => Inner::Cluster(ClusterConn::new(client, timeout)),
            // Its own connection to the primary, resolved through its own sentinel client.
            Connector::Sentinel { sentinels, master_name, node, .. } => {
                Inner::Sentinel(SentinelConn::new(&SentinelShared::new(sentinels, master_name, node)?, timeout))
            }
        };
        Ok(Conn { inner, timeout })
    }
}

/// A connection of any topology; cheap to clone (clones share the underlying
/// connection).
#[derive(Clone)]
pub(super) struct Conn {
    inner: Inner,
    timeout: Duration,
}

#[derive(Clone)]
enum Inner {
    Single(ConnectionManager),
    Multiplexed(MultiplexedConnection),
    Cluster(ClusterConn),
    Sentinel(SentinelConn),
}

fn timed_out(after: Duration) -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no answer within the command timeout ({} ms)", after.as_millis()),
    ))
}

impl Conn {
    /// `WAIT replicas timeout` on the node that took this connection's last write to
    /// `key` (on a cluster, the master of `key`'s slot; elsewhere the one server or
    /// primary this connection writes to). Answers how many replicas acknowledged.
    pub(super) async fn wait_for_replicas(
        &mut self,
        key: &str,
        replicas: u32,
        timeout: Duration,
    ) -> Result<u32, RedisError> {
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(replicas).arg(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        let deadline = self.timeout + timeout;
        let value = if let Inner::Cluster(conn) = &mut self.inner {
            let route =
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_key(key, SlotAddr::Master)));
            let (_, mut pinned) = conn.pinned();
            tokio::time::timeout(deadline, pinned.route_command(cmd, route))
                .await
                .map_err(|_| timed_out(deadline))??
        } else {
            tokio::time::timeout(deadline, self.inner.request(&cmd)).await.map_err(|_| timed_out(deadline))??
        };
        Ok(redis::from_redis_value(value)?)
    }
}

impl Inner {
    async fn request(&mut self, cmd: &Cmd) -> Result<Value, RedisError> {
        match self {
            Inner::Single(c) => c.req_packed_command(cmd).await,
            Inner::Multiplexed(c) => c.req_packed_command(cmd).await,
            Inner::Cluster(c) => c.request(cmd).await,
            Inner::Sentinel(c) => c.request(cmd).await,
        }
    }

    async fn request_pipeline(
        &mut self,
        pipe: &Pipeline,
        offset: usize,
        count: usize,
    ) -> Result<Vec<Value>, RedisError> {
        match self {
            Inner::Single(c) => c.req_packed_commands(pipe, offset, count).await,
            Inner::Multiplexed(c) => c.req_packed_commands(pipe, offset, count).await,
            Inner::Cluster(c) => c.request_pipeline(pipe, offset, count).await,
            Inner::Sentinel(c) => c.request_pipeline(pipe, offset, count).await,
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let timeout = self.timeout;
        Box::pin(async move {
            tokio::time::timeout(timeout, self.inner.request(cmd)).await.map_err(|_| timed_out(timeout))?
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let timeout = self.timeout;
        Box::pin(async move {
            tokio::time::timeout(timeout, self.inner.request_pipeline(cmd, offset, count))
                .await
                .map_err(|_| timed_out(timeout))?
        })
    }

    fn get_db(&self) -> i64 {
        match &self.inner {
            Inner::Single(c) => c.get_db(),
            Inner::Multiplexed(c) => c.get_db(),
            Inner::Cluster(_) | Inner::Sentinel(_) => 0,
        }
    }
}

/// A cluster connection and what renews it, shared by the store's clones of one
/// [`ClusterConn`].
pub(super) struct ClusterShared {
    client: ClusterClient,
    timeout: Duration,
    /// The connection, with the generation it was opened in.
    current: Mutex<(u64, ClusterConnection)>,
}

impl ClusterShared {
    fn open(client: &ClusterClient, timeout: Duration) -> ClusterConnection {
        let config = ClusterConfig::new().set_connection_timeout(timeout).set_response_timeout(timeout);
        client.get_pending_async_connection_with_config(config)
    }

    /// Replaces the connection of `generation` (if still current) with a new one, which
    /// learns the slots afresh.
    fn renew(&self, generation: u64) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.0 == generation {
            *current = (generation + 1, Self::open(&self.client, self.timeout));
            tracing::warn!(generation, "redis cluster: a node answered READONLY; reconnecting to learn the slots");
        }
    }
}

/// A cluster connection. The cluster client follows `MOVED`/`ASK` and failovers by
/// itself, except for two refusals after a failover that it does not act on: a replica's
/// `READONLY` and a transaction aborted because its commands were `MOVED`. Both ran
/// nothing, so they renew the connection (a fresh slot map) and are sent once more. A clone sticks to the connection its
/// first request used, so a `WAIT` counts the replicas of that very write.
#[derive(Clone)]
pub(super) struct ClusterConn {
    shared: Arc<ClusterShared>,
    pinned: Option<(u64, ClusterConnection)>,
}

impl ClusterConn {
    fn new(client: &ClusterClient, timeout: Duration) -> ClusterConn {
        let conn = ClusterShared::open(client, timeout);
        let shared = ClusterShared { client: client.clone(), timeout, current: Mutex::new((0, conn)) };
        ClusterConn { shared: Arc::new(shared), pinned: None }
    }

    fn pinned(&mut self) -> (u64, ClusterConnection) {
        if let Some(pinned) = &self.pinned {
            return pinned.clone();
        }
        let pinned = self.shared.current.lock().unwrap_or_else(|e| e.into_inner()).clone();
        self.pinned = Some(pinned.clone());
        pinned
    }

    /// Renews the connection after a refusal that ran nothing and says its slot map is
    /// stale: `READONLY` (a replica), or an aborted `MULTI`/`EXEC` (its commands were
    /// `MOVED`, which the client does not follow inside a transaction). Whether to retry.
    fn failed(&mut self, generation: u64, e: &RedisError) -> bool {
        if matches!(e.code(), Some("READONLY" | "EXECABORT")) {
            self.shared.renew(generation);
            self.pinned = None;
            return true;
        }
        false
    }

    async fn request(&mut self, cmd: &Cmd) -> Result<Value, RedisError> {
        let (generation, mut conn) = self.pinned();
        match conn.req_packed_command(cmd).await {
            Err(e) if self.failed(generation, &e) => self.pinned().1.req_packed_command(cmd).await,
            result => result,
        }
    }

    async fn request_pipeline(
        &mut self,
        pipe: &Pipeline,
        offset: usize,
        count: usize,
    ) -> Result<Vec<Value>, RedisError> {
        let (generation, mut conn) = self.pinned();
        match conn.req_packed_commands(pipe, offset, count).await {
            Err(e) if self.failed(generation, &e) => self.pinned().1.req_packed_commands(pipe, offset, count).await,
            result => result,
        }
    }
}

/// The sentinel client and the connection to the primary it named, shared by the
/// store's clones of one [`SentinelConn`].
pub(super) struct SentinelShared {
    client: tokio::sync::Mutex<SentinelClient>,
    /// The connection to the primary, with the generation it was opened in.
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    generation: Mutex<u64>,
}

impl SentinelShared {
    fn new(
        sentinels: &[String],
        master_name: &str,
        node: &SentinelNodeConnectionInfo,
    ) -> Result<Arc<SentinelShared>, RedisError> {
        let client = SentinelClient::build(
            sentinels.to_vec(),
            master_name.to_owned(),
            Some(node.clone()),
            SentinelServerType::Master,
        )?;
        Ok(Arc::new(SentinelShared {
            client: tokio::sync::Mutex::new(client),
            current: Mutex::new(None),
            generation: Mutex::new(0),
        }))
    }

    fn cached(&self) -> Option<(u64, MultiplexedConnection)> {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The connection to the primary: the current one, or a new one to the primary the
    /// sentinels name now.
    async fn connection(&self, timeout: Duration) -> Result<(u64, MultiplexedConnection), RedisError> {
        if let Some(current) = self.cached() {
            return Ok(current);
        }
        let mut client = self.client.lock().await;
        // Another request may have resolved it while this one waited.
        if let Some(current) = self.cached() {
            return Ok(current);
        }
        let primary = client.async_get_client().await?;
        let config =
            AsyncConnectionConfig::new().set_connection_timeout(Some(timeout)).set_response_timeout(Some(timeout));
        let conn = primary.get_multiplexed_async_connection_with_config(&config).await?;
        let generation = {
            let mut generation = self.generation.lock().unwrap_or_else(|e| e.into_inner());
            *generation += 1;
            *generation
        };
        tracing::info!(generation, "redis sentinel: connected to the primary");
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some((generation, conn.clone()));
        Ok((generation, conn))
    }

    /// Drops the connection of `generation` (if still current): the next request asks
    /// the sentinels for the primary again.
    fn forget(&self, generation: u64) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            *current = None;
            tracing::warn!(generation, "redis sentinel: the primary connection failed; asking the sentinels again");
        }
    }
}

/// A connection that follows the primary the sentinels name. A clone sticks to the
/// primary connection its first request used ("pinned"), so a `WAIT` after a write
/// counts the replicas of that very write.
#[derive(Clone)]
pub(super) struct SentinelConn {
    shared: Arc<SentinelShared>,
    timeout: Duration,
    pinned: Option<(u64, MultiplexedConnection)>,
}

/// The node stopped being the primary, or cannot be reached: ask the sentinels again.
fn primary_lost(e: &RedisError) -> bool {
    e.code() == Some("READONLY")
        || e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}

impl SentinelConn {
    fn new(shared: &Arc<SentinelShared>, timeout: Duration) -> SentinelConn {
        SentinelConn { shared: Arc::clone(shared), timeout, pinned: None }
    }

    async fn pinned(&mut self) -> Result<(u64, MultiplexedConnection), RedisError> {
        if let Some(pinned) = &self.pinned {
            return Ok(pinned.clone());
        }
        let pinned = self.shared.connection(self.timeout).await?;
        self.pinned = Some(pinned.clone());
        Ok(pinned)
    }

    fn failed(&mut self, generation: u64, e: &RedisError) {
        if primary_lost(e) {
            self.shared.forget(generation);
            self.pinned = None;
        }
    }

    async fn request_once(&mut self, cmd: &Cmd) -> Result<Value, RedisError> {
        let (generation, mut conn) = self.pinned().await?;
        let result = conn.req_packed_command(cmd).await;
        if let Err(e) = &result {
            self.failed(generation, e);
        }
        result
    }

    async fn request(&mut self, cmd: &Cmd) -> Result<Value, RedisError> {
        match self.request_once(cmd).await {
            // Refused by a demoted primary: nothing ran, so once more on the new one.
            Err(e) if e.code() == Some("READONLY") => self.request_once(cmd).await,
            result => result,
        }
    }

    async fn request_pipeline(
        &mut self,
        pipe: &Pipeline,
        offset: usize,
        count: usize,
    ) -> Result<Vec<Value>, RedisError> {
        let (generation, mut conn) = self.pinned().await?;
        let result = conn.req_packed_commands(pipe, offset, count).await;
        if let Err(e) = &result {
            self.failed(generation, e);
        }
        result
    }
}
