//! Building and running the application: shared by `main` and the tests.

use crate::api::{self, AppState};
use crate::config::{Settings, StoreKind};
use crate::releases::Releases;
use crate::snapshots::Snapshots;
use crate::store::embedded::OpenError;
use crate::store::redis::RedisOptions;
use crate::store::{EmbeddedStore, RedisStore, Store, StoreError};
use crate::sync::{SyncSettings, Syncer};
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
}

/// Opens the configured store.
pub async fn open_store(settings: &Settings) -> Result<Arc<dyn Store>, StartError> {
    Ok(match settings.store.kind {
        StoreKind::Embedded => Arc::new(EmbeddedStore::open(&settings.store.data_dir)?),
        StoreKind::Redis => {
            let options = RedisOptions {
                url: settings.store.redis_url.expose().to_owned(),
                prefix: settings.store.redis_prefix.clone(),
                stream_max_len: settings.store.stream_max_len,
                command_timeout: settings.store.command_timeout(),
            };
            Arc::new(RedisStore::connect(options).await.map_err(|source| StartError::Store { kind: "redis", source })?)
        }
    })
}

impl Application {
    /// Opens the store, loads every environment, binds the listener.
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        let store = open_store(&settings).await?;
        let snapshots = Arc::new(Snapshots::default());
        let syncer = Syncer::new(
            Arc::clone(&store),
            Arc::clone(&snapshots),
            SyncSettings {
                follow_block: Duration::from_millis(settings.store.follow_block_ms),
                resync_interval: Duration::from_millis(settings.store.resync_interval_ms.max(10)),
            },
        );
        syncer.load_all().await.map_err(|source| StartError::Store { kind: store.kind(), source })?;

        let addr = settings.server.addr();
        let listener = TcpListener::bind(addr).map_err(|source| StartError::Bind { addr, source })?;
        let port = listener.local_addr().map_err(|source| StartError::Bind { addr, source })?.port();
        let state = AppState {
            releases: Releases::new(Arc::clone(&store), Arc::clone(&snapshots)),
            snapshots,
            store_kind: store.kind(),
        };
        let max_body = settings.server.max_body_bytes;
        let app_state = state.clone();
        let mut server = HttpServer::new(move || {
            App::new()
                .configure(|cfg| api::configure(cfg, app_state.clone(), max_body))
                .default_service(web::to(api::not_found))
        });
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        let server =
            server.shutdown_timeout(10).listen(listener).map_err(|source| StartError::Bind { addr, source })?.run();
        tracing::info!(%addr, port, store = store.kind(), "cohort listening");
        Ok(Application { port, server, state, syncer })
    }

    /// The bound port (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// The shared state (tests peek at snapshots).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until the server is stopped (signal or handle), then stops the
    /// background sync.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let (stop, stopped) = watch::channel(false);
        let sync = tokio::spawn(self.syncer.run(stopped));
        let result = self.server.await;
        let _ = stop.send(true);
        let _ = sync.await;
        result
    }
}
