//! Building and running the application: shared by `main` and the tests.

use crate::api::{self, AppState};
use crate::auth::Verifier;
use crate::auth::secret::{self, Source};
use crate::config::{RedisTopologySetting, Settings, StoreKind, StoreSettings};
use crate::environments::Environments;
use crate::fleet::Fleets;
use crate::pending::PendingKills;
use crate::ramp::Ramps;
use crate::ramp::driver::Driver;
use crate::releases::Releases;
use crate::snapshots::Snapshots;
use crate::store::embedded::{EmbeddedOptions, OpenError};
use crate::store::redis::{RedisOptions, RedisTopology};
use crate::store::{EmbeddedStore, RedisStore, Store, StoreError};
use crate::store_watch::StoreWatch;
use crate::stream::{Fanout, StreamSettings, Streams};
use crate::sync::{SyncSettings, Syncer};
use crate::webhooks::{self, Dispatcher};
use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpServer, web};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The embedded store's data file.
    #[error(transparent)]
    DataFile(#[from] OpenError),
    /// The store could not be reached or read.
    #[error("cannot load releases from the {kind} store: {source}")]
    Store { kind: &'static str, source: StoreError },
    /// The token secret.
    #[error(transparent)]
    Secret(#[from] crate::auth::secret::SecretError),
    /// The high-water marks or the journal of pending kills in the data directory.
    #[error(transparent)]
    Watch(#[from] crate::store_watch::WatchError),
    /// A configured public key.
    #[error(transparent)]
    Keys(#[from] crate::auth::verify::KeyError),
    /// The TLS certificate or key.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// A `rate_limit.trusted_proxies` entry.
    #[error("rate_limit.trusted_proxies: {0}")]
    Proxies(#[from] crate::ratelimit::InvalidProxy),
    /// The settings contradict each other (e.g. two Redis topologies).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The listen address.
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
}

/// A built application, bound and loaded, not yet serving.
pub struct Application {
    port: u16,
    server: Server,
    state: AppState,
    syncer: Syncer,
    fanout: Fanout,
    driver: Driver,
    dispatcher: Dispatcher,
    pending_interval: Duration,
    tls: Option<crate::tls::Reloader>,
}

/// Stops a running application.
#[derive(Clone)]
pub struct AppHandle {
    server: ServerHandle,
    streams: Streams,
}

impl AppHandle {
    /// Ends the event streams (so their clients see a clean end and reconnect), then
    /// stops the server, waiting for in-flight requests when `graceful`.
    pub async fn stop(&self, graceful: bool) {
        self.streams.close();
        self.server.stop(graceful).await;
    }
}

/// Resolves on Ctrl-C or SIGTERM, after ending the event streams: a stream never
/// finishes by itself, so a graceful stop would otherwise wait out its timeout.
async fn shutdown_signal(streams: Streams) {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
    streams.close();
}

/// This machine's name (a pod's name on Kubernetes), for operators to find an instance by.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Opens the configured store.
pub async fn open_store(settings: &Settings) -> Result<Arc<dyn Store>, StartError> {
    Ok(match settings.store.kind {
        StoreKind::Embedded => Arc::new(EmbeddedStore::open_with(
            &settings.store.data_dir,
            EmbeddedOptions {
                audit_retention: settings.audit.retention,
                compact_after_bytes: settings.store.journal_compact_bytes,
            },
        )?),
        StoreKind::Redis => {
            let options = RedisOptions {
                topology: redis_topology(&settings.store)?,
                prefix: settings.store.redis_prefix.clone(),
                stream_max_len: settings.store.stream_max_len,
                command_timeout: settings.store.command_timeout(),
                audit_retention: settings.audit.retention as u64,
                min_replicas_ack: settings.store.min_replicas_ack,
                replication_timeout: settings.store.replication_timeout(),
            };
            Arc::new(RedisStore::connect(options).await.map_err(|source| StartError::Store { kind: "redis", source })?)
        }
    })
}

/// The Redis topology the settings select (checked again here: tests and tools adjust
/// settings after loading them).
fn redis_topology(store: &StoreSettings) -> Result<RedisTopology, StartError> {
    let nonempty = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
    Ok(match store.redis_topology()? {
        Some(RedisTopologySetting::Cluster) => {
            RedisTopology::Cluster { urls: store.redis_cluster_urls.iter().map(|u| u.expose().to_owned()).collect() }
        }
        Some(RedisTopologySetting::Sentinel) => {
            let sentinel = &store.redis_sentinel;
            RedisTopology::Sentinel {
                master_name: sentinel.master_name.trim().to_owned(),
                sentinels: sentinel.sentinels.iter().map(|u| u.expose().to_owned()).collect(),
                username: nonempty(&sentinel.username),
                password: nonempty(sentinel.password.expose()),
                db: sentinel.db,
            }
        }
        Some(RedisTopologySetting::Single) | None => RedisTopology::Single { url: store.redis_url.expose().to_owned() },
    })
}

/// The token verifier, with the secret from configuration or the data directory.
fn verifier(settings: &Settings) -> Result<Verifier, StartError> {
    let (secret, source) = secret::load_or_create(&settings.auth.hs256_secret, &settings.store.data_dir)?;
    match source {
        Source::Created(path) => {
            tracing::info!(path = %path.display(), "created a token secret");
            if settings.store.kind == StoreKind::Redis {
                tracing::warn!(
                    "each instance sharing Redis needs the same secret: set auth.hs256_secret (COHORT_AUTH__HS256_SECRET)"
                );
            }
            eprintln!(
                "cohort: created the token secret {}.\n        Mint a first admin token with:\n          cohort token mint --sub $USER --env '*' --scope admin --ttl 8h",
                path.display()
            );
        }
        Source::File(path) => tracing::debug!(path = %path.display(), "token secret read"),
        Source::Configured => {}
    }
    Ok(Verifier::new(&secret, &settings.auth)?)
}

/// Stream tickets for OFREP `eventStreams` URLs, under a key derived from the same secret
/// as the verifier's (read again: [`verifier`] has created it when it was missing), so
/// every instance sharing the secret accepts every instance's tickets.
fn stream_tickets(settings: &Settings) -> Result<crate::ofrep::ticket::Tickets, StartError> {
    let (secret, _) = secret::load_or_create(&settings.auth.hs256_secret, &settings.store.data_dir)?;
    Ok(crate::ofrep::ticket::Tickets::new(&secret, settings.ofrep.ticket_ttl(), settings.auth.leeway_secs))
}

impl Application {
    /// Opens the store, loads every environment, binds the listener.
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        let store = open_store(&settings).await?;
        let watch = Arc::new(StoreWatch::open(&settings.store.data_dir)?);
        let snapshots = Arc::new(Snapshots::new(settings.server.stream_history, watch));
        // Kills a previous run served but the store never took are served again from the
        // first load on.
        let pending = Arc::new(PendingKills::open(&settings.store.data_dir)?);
        for kill in pending.list() {
            tracing::warn!(env = %kill.env, target = ?kill.target, on = kill.state.on, "serving a kill the store has not taken yet");
            snapshots.restore_kill(&kill.env, kill.target, kill.state);
        }
        let syncer = Syncer::new(
            Arc::clone(&store),
            Arc::clone(&snapshots),
            SyncSettings {
                follow_block: Duration::from_millis(settings.store.follow_block_ms),
                resync_interval: Duration::from_millis(settings.store.resync_interval_ms.max(10)),
            },
        );
        // Unready, not dead: a store that cannot be reached now is retried in the
        // background, and the instance becomes ready with its first snapshot.
        if let Err(error) = syncer.load_all().await {
            tracing::error!(store = store.kind(), %error, "cannot load the releases; not ready until the store answers");
            snapshots.watch().set_unreachable(Some(error.to_string()));
        }
        let verifier = Arc::new(verifier(&settings)?);
        // An identity provider that does not answer delays start-up this long at most.
        verifier.fetch_keys(Duration::from_secs(5)).await;
        let tickets = Arc::new(stream_tickets(&settings)?);

        // Read before binding: a certificate that does not load stops start-up. SIGHUP
        // reloads it from here on (and keeps its default without TLS).
        let certificates = match settings.server.tls_files() {
            Some((cert, key)) => Some(crate::tls::CertificateFiles::load(cert, key)?),
            None => None,
        };
        let tls = certificates.as_ref().map(|files| crate::tls::Reloader::new(Arc::clone(files))).transpose()?;
        let addr = settings.server.addr();
        let listener = TcpListener::bind(addr).map_err(|source| StartError::Bind { addr, source })?;
        let port = listener.local_addr().map_err(|source| StartError::Bind { addr, source })?.port();
        let syncer = syncer.labelled(format!("{}:{port}", host_name()));
        let (streams, fanout) = Streams::new(
            Arc::clone(&snapshots),
            StreamSettings { heartbeat: settings.server.sse_heartbeat(), buffer: settings.server.stream_buffer },
        );
        let releases = Releases::new(Arc::clone(&store), Arc::clone(&snapshots)).with_pending(pending);
        let (webhooks, dispatcher) = webhooks::channel(settings.webhooks.clone());
        let fleets = Fleets::new(releases.clone(), Duration::from_millis(settings.fleet.node_ttl_ms.max(1)));
        let ramps = Ramps::new(releases.clone(), Arc::clone(&snapshots), webhooks, fleets);
        let holder = format!("{}-{}-{:08x}", store.kind(), std::process::id(), rand::random::<u32>());
        let driver = Driver::new(
            ramps.clone(),
            Arc::clone(&store),
            Arc::clone(&snapshots),
            holder.clone(),
            Duration::from_millis(settings.ramp.tick_ms.max(1)),
            Duration::from_millis(settings.ramp.lease_ms.max(1)),
        );
        let revocations = crate::revocations::Revocations::new(
            releases.clone(),
            Arc::clone(&snapshots),
            settings.auth.max_ttl,
            settings.auth.leeway_secs,
        );
        let state = AppState {
            environments: Environments::new(Arc::clone(&store), Arc::clone(&snapshots)),
            releases,
            ramps,
            instance_id: holder,
            snapshots,
            store_kind: store.kind(),
            verifier,
            streams: streams.clone(),
            revocations,
            release_labels: crate::metrics::ReleaseLabels::from_settings(&settings.metrics),
            tickets,
            outcomes: Arc::new(crate::events::Outcomes::new(&settings.events)),
            limits: Arc::new(crate::ratelimit::RateLimits::new(&settings.rate_limit)?),
            console: settings.console.clone(),
        };
        let max_body = settings.server.max_body_bytes;
        let cors = Arc::new(api::cors::CorsPolicy::new(&settings.cors));
        let edges = api::edges::Edges::new(&settings.http, max_body);
        let app_state = state.clone();
        let mut server = HttpServer::new(move || {
            App::new()
                .wrap(actix_web::middleware::from_fn(api::limit::middleware))
                .wrap(actix_web::middleware::from_fn(crate::metrics::observe))
                // Every answer passes the edges, which answer the hot routes (`api::hot`)
                // before the metrics layer and the router run.
                .wrap(actix_web::middleware::from_fn(move |req, next| api::edges::guard(edges, req, next)))
                // Outermost, outside the hot routes: preflights are answered before anything
                // else, and every answer to a cross-origin call gets its CORS headers.
                .wrap(api::cors::Cors::new(Arc::clone(&cors)))
                .configure(|cfg| api::configure(cfg, app_state.clone(), max_body))
                .default_service(web::to(api::not_found))
        });
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        let server = server.shutdown_timeout(10).shutdown_signal(shutdown_signal(streams));
        let server = match &certificates {
            Some(files) => server.listen_rustls_0_23(listener, files.server_config()?),
            None => server.listen(listener),
        };
        let server = server.map_err(|source| StartError::Bind { addr, source })?.run();
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(%addr, port, scheme, store = store.kind(), "cohort listening");
        let pending_interval = Duration::from_millis(settings.store.resync_interval_ms.max(10));
        Ok(Application { port, server, state, syncer, fanout, driver, dispatcher, pending_interval, tls })
    }

    /// The bound port (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server.
    pub fn handle(&self) -> AppHandle {
        AppHandle { server: self.server.handle(), streams: self.state.streams.clone() }
    }

    /// The shared state (tests peek at snapshots).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until the server is stopped (signal or handle), then stops the
    /// background sync.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let (stop, stopped) = watch::channel(false);
        let sync = tokio::spawn(self.syncer.run(stopped.clone()));
        let fanout = tokio::spawn(self.fanout.run(stopped.clone()));
        let driver = tokio::spawn(self.driver.run(stopped.clone()));
        let pending =
            tokio::spawn(crate::pending::run(self.state.releases.clone(), self.pending_interval, stopped.clone()));
        let keys = self.state.verifier.key_refresh(stopped.clone()).map(tokio::spawn);
        let tls = self.tls.map(|reloader| tokio::spawn(reloader.run(stopped.clone())));
        let dispatcher = tokio::spawn(self.dispatcher.run(stopped));
        let result = self.server.await;
        let _ = stop.send(true);
        let _ = sync.await;
        let _ = fanout.await;
        let _ = driver.await;
        let _ = dispatcher.await;
        let _ = pending.await;
        if let Some(keys) = keys {
            let _ = keys.await;
        }
        if let Some(tls) = tls {
            let _ = tls.await;
        }
        if let Err(error) = self.state.releases.store().flush().await {
            tracing::warn!(%error, "could not flush the store on shutdown");
        }
        result
    }
}
