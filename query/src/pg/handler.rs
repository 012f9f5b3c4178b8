//! The simple and extended query protocols over `QueryEngine`.
//!
//! Every statement's SQL text goes to the engine (`execute` for the simple protocol, `prepare`
//! and `execute_prepared` for Parse/Bind/Execute), so each runs under the engine's limits and
//! sees what the engine adds (views, their DDL). Before that, the text goes through
//! datafusion-pg-catalog's Postgres compatibility parser, which rewrites what clients' catalog
//! queries use and DataFusion does not plan (`OPERATOR(pg_catalog.~)`, `COLLATE`,
//! `'name'::regclass`, a few psql queries DataFusion cannot run at all). A statement the
//! rewriting leaves unchanged is sent as the client's own text, so errors point into it; text
//! the Postgres parser cannot read goes to the engine as it is (the engine may know it, and
//! otherwise says why not). Session statements (SET, SHOW of a setting, BEGIN ...) are
//! answered by `session`.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use futures::{stream, Sink, SinkExt};
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, ConnectionManager, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::response::NoticeResponse;
use pgwire::messages::startup::ParameterStatus;
use pgwire::messages::PgWireBackendMessage;

use super::errors::{self, sqlstate};
use super::session::{reported_name, SessionCommand, Settings};
use crate::engine::{PreparedStatement, QueryEngine, QueryError, QueryOutput};

/// One unit of a client's SQL text, ready to run.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Translated {
    Session(SessionCommand),
    /// Text for the engine; `original` when it is exactly the client's text.
    Sql { text: String, original: bool },
}

/// A statement of the extended protocol, as stored by Parse.
#[derive(Clone, Debug)]
pub enum PgStatement {
    Query {
        prepared: Arc<PreparedStatement>,
        /// What ParameterDescription announced, so Bind's values are decoded as such.
        parameter_types: Vec<Type>,
        inferred_types: Vec<Option<DataType>>,
    },
    Session(SessionCommand),
}

/// Turns client SQL into engine statements and session commands.
#[derive(Debug)]
pub struct StatementParser {
    engine: Arc<QueryEngine>,
    compatibility: PostgresCompatibilityParser,
}

impl StatementParser {
    fn translate(&self, sql: &str) -> Result<Vec<Translated>, ErrorInfo> {
        let limit_bytes = self.engine.limits().sql_bytes_max;
        if sql.len() > limit_bytes {
            return Err(errors::query_error(&QueryError::TooLong { bytes: sql.len(), limit_bytes }, None));
        }
        let Ok(statements) = self.compatibility.parse(sql) else {
            return Ok(vec![Translated::Sql { text: sql.to_string(), original: true }]);
        };
        let single = statements.len() == 1;
        Ok(statements
            .into_iter()
            .map(|statement| {
                if let Some(command) = super::session::recognise(&statement) {
                    return Translated::Session(command);
                }
                let text = statement.to_string();
                if single && Self::unchanged(sql, &text) {
                    Translated::Sql { text: sql.to_string(), original: true }
                } else {
                    Translated::Sql { text, original: false }
                }
            })
            .collect())
    }

    /// Whether the compatibility rewrites left `sql` (one statement) as it was.
    fn unchanged(sql: &str, rewritten: &str) -> bool {
        match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
            Ok(plain) => plain.len() == 1 && plain[0].to_string() == rewritten,
            Err(_) => false,
        }
    }
}

#[async_trait]
impl QueryParser for StatementParser {
    type Statement = PgStatement;

    async fn parse_sql<C>(&self, _client: &C, sql: &str, _types: &[Option<Type>]) -> PgWireResult<Option<PgStatement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let mut translated = self.translate(sql).map_err(errors::user_error)?;
        if translated.len() > 1 {
            return Err(errors::user_error(errors::error(sqlstate::SYNTAX_ERROR, "cannot insert multiple commands into a prepared statement")));
        }
        let Some(item) = translated.pop() else { return Ok(None) };
        match item {
            Translated::Session(command) => Ok(Some(PgStatement::Session(command))),
            Translated::Sql { text, original } => {
                let prepared = self.engine.prepare(&text).await.map_err(|failure| errors::user_error(errors::query_error(&failure, original.then_some(sql))))?;
                let inferred_types = prepared.parameter_types().map_err(|error| errors::user_error(errors::query_error(&QueryError::from(error), None)))?;
                let parameter_types = inferred_types
                    .iter()
                    .map(|inferred| match inferred {
                        Some(data_type) => arrow_pg::datatypes::into_pg_type(data_type),
                        None => Ok(Type::UNKNOWN),
                    })
                    .collect::<PgWireResult<Vec<Type>>>()?;
                Ok(Some(PgStatement::Query { prepared: Arc::new(prepared), parameter_types, inferred_types }))
            }
        }
    }

    fn get_parameter_types(&self, statement: &PgStatement) -> PgWireResult<Vec<Type>> {
        Ok(match statement {
            PgStatement::Query { parameter_types, .. } => parameter_types.clone(),
            PgStatement::Session(_) => Vec::new(),
        })
    }

    fn get_result_schema(&self, statement: &PgStatement, format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        let schema = match statement {
            PgStatement::Query { prepared, .. } => prepared.schema(),
            PgStatement::Session(command) => match session_schema(command) {
                Some(schema) => schema,
                None => return Ok(Vec::new()),
            },
        };
        arrow_pg::datatypes::arrow_schema_to_pg_fields(&schema, format.unwrap_or(&Format::UnifiedText), None)
    }
}

/// The columns a session command answers, if it answers rows.
fn session_schema(command: &SessionCommand) -> Option<SchemaRef> {
    let text = |name: &str| Field::new(name, DataType::Utf8, true);
    match command {
        SessionCommand::Show { name } => Some(Arc::new(Schema::new(vec![text(name)]))),
        SessionCommand::ShowAll => Some(Arc::new(Schema::new(vec![text("name"), text("setting"), text("description")]))),
        _ => None,
    }
}

/// The query handlers of every connection; per-connection state lives in the connection's
/// session extensions.
#[derive(Debug)]
pub struct PgSession {
    engine: Arc<QueryEngine>,
    parser: Arc<StatementParser>,
}

impl PgSession {
    pub fn new(engine: Arc<QueryEngine>) -> PgSession {
        let parser = Arc::new(StatementParser { engine: engine.clone(), compatibility: PostgresCompatibilityParser::new() });
        PgSession { engine, parser }
    }

    fn settings<C: ClientInfo>(&self, client: &C) -> Arc<Mutex<Settings>> {
        let timeout_ms = self.engine.limits().timeout.as_millis();
        client.session_extensions().get_or_insert_with(|| Mutex::new(Settings::new(timeout_ms)))
    }

    async fn session_command<C>(&self, client: &mut C, command: &SessionCommand, format: &Format) -> Result<Response, ErrorInfo>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let settings = self.settings(client);
        let rows = |columns: Vec<Vec<String>>| -> Result<Response, ErrorInfo> {
            let schema = session_schema(command).ok_or_else(|| errors::error(sqlstate::INTERNAL_ERROR, "the command answers no rows"))?;
            let arrays: Vec<ArrayRef> = columns.into_iter().map(|column| Arc::new(StringArray::from(column)) as ArrayRef).collect();
            let batch = RecordBatch::try_new(schema.clone(), arrays).map_err(|error| errors::error(sqlstate::INTERNAL_ERROR, error.to_string()))?;
            encode(schema, vec![batch], format).map(Response::Query).map_err(|error| errors::error(sqlstate::INTERNAL_ERROR, error.to_string()))
        };
        match command {
            SessionCommand::Set { name, value } => {
                let (stored, warning) = {
                    let mut settings = settings.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    let warning = settings.set(name, value).map_err(|message| errors::error(sqlstate::CANT_CHANGE_RUNTIME_PARAM, message))?;
                    (settings.get(name).map(str::to_string), warning)
                };
                if let Some(warning) = warning {
                    self.warn(client, warning).await?;
                }
                if let (Some(reported), Some(value)) = (reported_name(name), stored) {
                    let status = PgWireBackendMessage::ParameterStatus(ParameterStatus::new(reported.to_string(), value));
                    client.send(status).await.map_err(|error| errors::error(sqlstate::INTERNAL_ERROR, format!("{:?}", PgWireError::from(error))))?;
                }
                Ok(Response::Execution(Tag::new("SET")))
            }
            SessionCommand::Show { name } => {
                let value = settings.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(name).map(str::to_string);
                match value {
                    Some(value) => rows(vec![vec![value]]),
                    None => Err(errors::error(sqlstate::UNDEFINED_OBJECT, format!("unrecognized configuration parameter \"{name}\""))),
                }
            }
            SessionCommand::ShowAll => {
                let all = settings.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).all();
                let (names, values): (Vec<String>, Vec<String>) = all.into_iter().unzip();
                let descriptions = vec![String::new(); names.len()];
                rows(vec![names, values, descriptions])
            }
            SessionCommand::Begin => Ok(Response::TransactionStart(Tag::new("BEGIN"))),
            SessionCommand::Commit => Ok(Response::TransactionEnd(Tag::new("COMMIT"))),
            SessionCommand::Rollback => Ok(Response::TransactionEnd(Tag::new("ROLLBACK"))),
            SessionCommand::Reset { tag, name } => {
                let mut settings = settings.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if *tag != "DEALLOCATE" {
                    settings.reset(name.as_deref());
                }
                Ok(Response::Execution(Tag::new(tag)))
            }
        }
    }

    /// A WARNING notice (SQLSTATE 01000) to the client, which shows it and goes on.
    async fn warn<C>(&self, client: &mut C, message: String) -> Result<(), ErrorInfo>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut warning = errors::error("01000", message);
        warning.severity = "WARNING".into();
        let notice = PgWireBackendMessage::NoticeResponse(NoticeResponse::from(warning));
        client.send(notice).await.map_err(|error| errors::error(sqlstate::INTERNAL_ERROR, format!("{:?}", PgWireError::from(error))))
    }

    /// The engine's answer as Postgres rows, with a warning when the row limit cut it.
    async fn answer<C>(&self, client: &mut C, output: QueryOutput, format: &Format) -> Result<Response, ErrorInfo>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if output.truncated {
            self.warn(client, format!("the answer was cut at the server's row limit of {} rows", self.engine.limits().rows_max)).await?;
        }
        encode(output.schema, output.batches, format).map(Response::Query).map_err(|error| errors::error(sqlstate::INTERNAL_ERROR, error.to_string()))
    }
}

/// Rows as DataRow messages, encoded as each is sent (the batches are already bounded by the
/// engine's row limit).
fn encode(schema: SchemaRef, batches: Vec<RecordBatch>, format: &Format) -> PgWireResult<QueryResponse> {
    let fields = Arc::new(arrow_pg::datatypes::arrow_schema_to_pg_fields(&schema, format, None)?);
    let row_fields = fields.clone();
    let rows = batches.into_iter().flat_map(move |batch| arrow_pg::datatypes::encode_recordbatch(row_fields.clone(), batch));
    Ok(QueryResponse::new(fields, stream::iter(rows)))
}

#[async_trait]
impl SimpleQueryHandler for PgSession {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let translated = self.parser.translate(query).map_err(errors::user_error)?;
        if translated.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut responses = Vec::with_capacity(translated.len());
        // As Postgres: the statements run in order until the first error, which ends the query.
        for item in translated {
            let response = match item {
                Translated::Session(command) => self.session_command(client, &command, &Format::UnifiedText).await,
                Translated::Sql { text, original } => match self.engine.execute(&text).await {
                    Ok(output) => self.answer(client, output, &Format::UnifiedText).await,
                    Err(failure) => Err(errors::query_error(&failure, original.then_some(query))),
                },
            };
            match response {
                Ok(response) => responses.push(response),
                Err(error) => {
                    responses.push(Response::Error(Box::new(error)));
                    break;
                }
            }
        }
        Ok(responses)
    }
}

#[async_trait]
impl ExtendedQueryHandler for PgSession {
    type Statement = PgStatement;
    type QueryParser = StatementParser;

    fn query_parser(&self) -> Arc<StatementParser> {
        self.parser.clone()
    }

    async fn do_query<C>(&self, client: &mut C, portal: &Portal<PgStatement>, _max_rows: usize) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = PgStatement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let format = &portal.result_column_format;
        let response = match &portal.statement.statement {
            PgStatement::Session(command) => self.session_command(client, command, format).await,
            PgStatement::Query { prepared, parameter_types, inferred_types } => {
                let inferred: Vec<Option<&DataType>> = inferred_types.iter().map(Option::as_ref).collect();
                let announced: Vec<Option<&Type>> = parameter_types.iter().map(Some).collect();
                let parameters = arrow_pg::datatypes::df::deserialize_parameters_with_server_types(portal, &inferred, &announced)?;
                match self.engine.execute_prepared(prepared, parameters).await {
                    Ok(output) => self.answer(client, output, format).await,
                    Err(failure) => Err(errors::query_error(&failure, None)),
                }
            }
        };
        response.map_err(errors::user_error)
    }
}

/// Startup without authentication: the listener binds loopback only (as the HTTP endpoint).
/// Connections register with `connections` so a client's CancelRequest reaches its query.
#[derive(Debug)]
pub struct Startup {
    pub connections: Arc<ConnectionManager>,
}

impl NoopStartupHandler for Startup {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(self.connections.clone())
    }
}
