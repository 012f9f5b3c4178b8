//! Postgres wire protocol front end (`serve --pg-addr`): psql, psycopg, Grafana's PostgreSQL
//! data source and other Postgres clients query the same `QueryEngine` as HTTP.
//!
//! - `framing` — encryption requests refused, every message's length bounded before pgwire
//!   buffers it.
//! - `handler` — simple and extended query protocols over the engine, startup.
//! - `session` — SET, SHOW, BEGIN/COMMIT and the like, answered per connection.
//! - `errors` — ErrorResponse fields: SQLSTATE, message, position.
//! - `budget` — named prepared statements and portals per connection, bounded.
//!
//! The protocol itself (message codec, portals, statement store, cancel requests) is pgwire's;
//! this module owns the accept loop and the per-connection loop so it can bound connections and
//! message sizes, which pgwire's `process_socket` does not.

mod budget;
mod errors;
mod framing;
mod handler;
mod session;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::{ClientInfo, ConnectionManager, DefaultClient, NoopHandler, PgWireConnectionState};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::{process_error, process_message, PgWireMessageServerCodec};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::codec::Framed;

use crate::engine::QueryEngine;
use errors::sqlstate;
use handler::{PgSession, Startup};
pub use session::current_setting_udf;

/// Limits of the Postgres listener.
#[derive(Clone, Debug)]
pub struct PgConfig {
    /// Connections served at once; more are refused with SQLSTATE 53300.
    pub connections_max: usize,
    /// Largest message a client may send (a Query's SQL text, a Bind's parameters).
    pub message_bytes_max: usize,
    /// A connection must finish its startup within this.
    pub startup_timeout: Duration,
}

impl PgConfig {
    /// Limits that fit `engine`: a message holds at most the engine's longest SQL text, plus
    /// room for a Parse's parameter types or a Bind's values.
    pub fn for_engine(engine: &QueryEngine, connections_max: usize) -> PgConfig {
        PgConfig { connections_max, message_bytes_max: engine.limits().sql_bytes_max + (64 << 10), startup_timeout: Duration::from_secs(10) }
    }
}

/// Serves Postgres clients on `listener` until `shutdown` completes (then accepts no more;
/// open sessions end with the process).
pub async fn serve(listener: TcpListener, engine: Arc<QueryEngine>, config: PgConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> io::Result<()> {
    assert!(config.connections_max >= 1 && config.message_bytes_max >= 4096, "Postgres limits too small: {config:?}");
    let handlers = Arc::new(Handlers::new(engine));
    let permits = Arc::new(Semaphore::new(config.connections_max));
    let config = Arc::new(config);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait, the condition may pass.
                    tracing::warn!(%error, "Postgres accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tokio::spawn(refuse(stream, config.connections_max));
            continue;
        };
        let handlers = handlers.clone();
        let config = config.clone();
        tokio::spawn(async move {
            if let Err(error) = serve_connection(stream, &handlers, &config).await {
                tracing::debug!(%peer, %error, "Postgres connection ended");
            }
            drop(permit);
        });
    }
}

/// What every connection shares.
struct Handlers {
    session: Arc<PgSession>,
    startup: Arc<Startup>,
    cancel: Arc<DefaultCancelHandler>,
    copy: Arc<NoopHandler>,
}

impl Handlers {
    fn new(engine: Arc<QueryEngine>) -> Handlers {
        let connections = Arc::new(ConnectionManager::new());
        Handlers {
            session: Arc::new(PgSession::new(engine)),
            startup: Arc::new(Startup { connections: connections.clone() }),
            cancel: Arc::new(DefaultCancelHandler::new(connections)),
            copy: Arc::new(NoopHandler),
        }
    }
}

/// Tells a client over the connection limit why, as Postgres does, and closes.
async fn refuse(mut stream: TcpStream, connections_max: usize) {
    let info = errors::fatal(sqlstate::TOO_MANY_CONNECTIONS, format!("sorry, too many clients already (the limit is {connections_max})"));
    let mut bytes = bytes::BytesMut::new();
    if pgwire::messages::Message::encode(&pgwire::messages::response::ErrorResponse::from(info), &mut bytes).is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&bytes)).await;
    }
}

/// One client, from its encryption requests to Terminate or end of stream. The loop is
/// pgwire's `process_socket` with the startup timeout and the framing checks of this module.
async fn serve_connection(mut stream: TcpStream, handlers: &Handlers, config: &PgConfig) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let peer = stream.peer_addr()?;
    let head = tokio::time::timeout(config.startup_timeout, framing::refuse_encryption(&mut stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no startup message in time"))??;
    let stream = framing::BoundedStream::new(stream, head, config.message_bytes_max);
    let codec = PgWireMessageServerCodec::new(DefaultClient::new(peer, false));
    let mut socket = Framed::new(stream, codec);
    socket.set_state(PgWireConnectionState::AwaitingStartup);
    let mut names = budget::NameBudget::default();
    let startup_deadline = tokio::time::sleep(config.startup_timeout);
    tokio::pin!(startup_deadline);
    loop {
        let message = if matches!(socket.state(), PgWireConnectionState::AwaitingStartup | PgWireConnectionState::AuthenticationInProgress) {
            tokio::select! {
                _ = &mut startup_deadline => return Err(io::Error::new(io::ErrorKind::TimedOut, "startup took too long")),
                message = socket.next() => message,
            }
        } else {
            socket.next().await
        };
        let message = match message {
            None | Some(Ok(PgWireFrontendMessage::Terminate(_))) => return Ok(()),
            Some(Ok(message)) => message,
            Some(Err(error)) => {
                // A message over the limits or one pgwire cannot decode: the stream is out of
                // step, so say why and close, as Postgres does on a protocol violation.
                let reason = socket.get_ref().failure().map(str::to_string).unwrap_or_else(|| error.to_string());
                let code = if socket.get_ref().failure().is_some() { sqlstate::PROGRAM_LIMIT_EXCEEDED } else { sqlstate::PROTOCOL_VIOLATION };
                let info = errors::fatal(code, format!("invalid message from the client: {reason}"));
                let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(PgWireBackendMessage::ErrorResponse(info.into()))).await;
                return Err(io::Error::new(io::ErrorKind::InvalidData, reason));
            }
        };
        let extended = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => message.is_extended_query(),
        };
        // Only messages pgwire will act on count (after an error it skips them until Sync).
        if !matches!(socket.state(), PgWireConnectionState::AwaitingSync) {
            if let Err(info) = names.admit(&message) {
                process_error(&mut socket, errors::user_error(info), extended).await?;
                continue;
            }
        }
        let result = process_message(
            message,
            &mut socket,
            handlers.startup.clone(),
            handlers.session.clone(),
            handlers.session.clone(),
            handlers.copy.clone(),
            handlers.cancel.clone(),
        )
        .await;
        if let Err(error) = result {
            process_error(&mut socket, error, extended).await?;
        }
    }
}
