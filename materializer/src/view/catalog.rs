//! `Materializer`: the set of views, their durable definitions and the DDL over them.
//!
//! Definitions (each view's CREATE statement and its indexes) are kept in
//! `<data-dir>/views/definitions.json`, rewritten whole and atomically (temporary file, fsync,
//! rename, fsync of the directory) on each change. A file rather than an internal log: the
//! definitions are few and small, change rarely, and a file is read back with no replay or
//! compaction; the rename makes each change all or nothing. Each view's state lives in
//! `<data-dir>/views/<name>/` (see `checkpoint.rs`).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use broker::cluster::Cluster;
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;

use super::budget::MemoryBudget;
use super::definition::ViewDefinition;
use super::maintain::ViewLimits;
use super::runner::{self, ViewRuntime};
use super::statement::{parse_statement, validate_name, ViewStatement};
use super::{ViewError, ViewShared};

pub const VIEWS_DIRECTORY: &str = "views";
pub const DEFINITIONS_FILE: &str = "definitions.json";
/// Views per server: each is a task and holds its rows in memory.
pub const VIEWS_MAX: usize = 256;
/// Indexes per view: each is maintained on every change of a row.
pub const INDEXES_PER_VIEW_MAX: usize = 16;
/// CREATE MATERIALIZED VIEW waits this long at most for the new view to apply what its topic
/// held when it was created, so that a query right after it sees those records (as a
/// Postgres CREATE MATERIALIZED VIEW is populated when it returns). A larger topic goes on
/// being applied in the background; the answer says so.
pub const CREATE_CATCH_UP_WAIT: Duration = Duration::from_secs(5);
const CATCH_UP_POLL: Duration = Duration::from_millis(10);

#[derive(Clone, Debug)]
pub struct MaterializerConfig {
    pub data_dir: PathBuf,
    pub checkpoint_interval: Duration,
    pub limits: ViewLimits,
}

struct Running {
    shared: Arc<ViewShared>,
    /// (index name, column), in creation order.
    indexes: Vec<(String, String)>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

pub struct Materializer {
    cluster: Arc<Cluster>,
    config: MaterializerConfig,
    /// Shared by every view's chunks.
    budget: Arc<MemoryBudget>,
    /// DDL is serialised by this lock; queries read `published`.
    running: Mutex<BTreeMap<String, Running>>,
    published: RwLock<BTreeMap<String, Arc<ViewShared>>>,
}

impl std::fmt::Debug for Materializer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Materializer").field("data_dir", &self.config.data_dir).finish()
    }
}

fn io_error(what: &str, error: io::Error) -> ViewError {
    ViewError::Internal(format!("{what}: {error}"))
}

impl Materializer {
    /// Loads the stored definitions, resumes each view from its checkpoint and starts its task.
    pub async fn open(cluster: Arc<Cluster>, config: MaterializerConfig) -> Result<Arc<Materializer>, ViewError> {
        assert!(!config.checkpoint_interval.is_zero(), "the checkpoint interval must be positive");
        let budget = Arc::new(MemoryBudget::new(config.limits.memory_bytes_max.max(1)));
        let materializer = Arc::new(Materializer {
            cluster,
            config,
            budget,
            running: Mutex::new(BTreeMap::new()),
            published: RwLock::new(BTreeMap::new()),
        });
        let definitions = materializer.read_definitions()?;
        let mut running = materializer.running.lock().await;
        for (sql, indexes) in definitions {
            let Some(Ok(ViewStatement::CreateView { name, key, .. })) = parse_statement(&sql) else {
                return Err(ViewError::Internal(format!("a stored definition does not parse: {sql}")));
            };
            match materializer.start(&name, key.as_deref(), &sql).await {
                Ok(mut view) => {
                    for (index, column) in indexes {
                        match view.shared.store.add_index(&index, &column) {
                            Ok(()) => view.indexes.push((index, column)),
                            Err(error) => {
                                tracing::error!(view = %name, %index, %error, "a stored index could not be rebuilt")
                            }
                        }
                    }
                    materializer.publish(&name, Some(view.shared.clone()));
                    running.insert(name, view);
                }
                // One broken view must not keep the server (and the other views) down.
                Err(error) => {
                    tracing::error!(view = %name, %error, "a stored view could not be started")
                }
            }
        }
        drop(running);
        Ok(materializer)
    }

    fn views_directory(&self) -> PathBuf {
        self.config.data_dir.join(VIEWS_DIRECTORY)
    }

    fn read_definitions(&self) -> Result<Vec<(String, Vec<(String, String)>)>, ViewError> {
        let path = self.views_directory().join(DEFINITIONS_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(io_error("reading the view definitions", error)),
        };
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|error| ViewError::Internal(format!("{}: {error}", path.display())))?;
        let bad = || ViewError::Internal(format!("{}: unexpected content", path.display()));
        let mut definitions = Vec::new();
        for entry in value.as_array().ok_or_else(bad)? {
            let sql = entry.get("sql").and_then(|sql| sql.as_str()).ok_or_else(bad)?.to_string();
            let mut indexes = Vec::new();
            for index in entry.get("indexes").and_then(|indexes| indexes.as_array()).ok_or_else(bad)? {
                let (Some(name), Some(column)) = (index.get(0).and_then(|name| name.as_str()), index.get(1).and_then(|column| column.as_str())) else {
                    return Err(bad());
                };
                indexes.push((name.to_string(), column.to_string()));
            }
            definitions.push((sql, indexes));
        }
        Ok(definitions)
    }

    fn write_definitions(&self, running: &BTreeMap<String, Running>) -> Result<(), ViewError> {
        let entries: Vec<serde_json::Value> = running
            .values()
            .map(|view| serde_json::json!({ "sql": view.shared.definition.sql, "indexes": view.indexes.iter().map(|(name, column)| serde_json::json!([name, column])).collect::<Vec<_>>() }))
            .collect();
        let directory = self.views_directory();
        fs::create_dir_all(&directory).map_err(|error| io_error("creating the views directory", error))?;
        let text = serde_json::to_string_pretty(&entries).map_err(|error| ViewError::Internal(error.to_string()))?;
        super::checkpoint::write_atomically(&directory.join(DEFINITIONS_FILE), |mut file| io::Write::write_all(&mut file, text.as_bytes()))
            .map_err(|error| io_error("writing the view definitions", error))
    }

    async fn start(&self, name: &str, key: Option<&str>, sql: &str) -> Result<Running, ViewError> {
        let definition = Arc::new(ViewDefinition::analyse(name, key, sql)?);
        let directory = self.views_directory().join(name);
        let runtime = ViewRuntime::open(definition, directory, self.config.limits, self.budget.clone()).await?;
        let shared = runtime.shared.clone();
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(runner::run(runtime, self.cluster.clone(), self.config.checkpoint_interval, stopped));
        Ok(Running {
            shared,
            indexes: Vec::new(),
            stop,
            task,
        })
    }

    fn publish(&self, name: &str, view: Option<Arc<ViewShared>>) {
        let mut published = self.published.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        match view {
            Some(view) => published.insert(name.to_string(), view),
            None => published.remove(name),
        };
    }

    /// The views' memory budget and what their chunks hold of it.
    pub fn memory_budget(&self) -> &MemoryBudget {
        &self.budget
    }

    pub fn view(&self, name: &str) -> Option<Arc<ViewShared>> {
        self.published.read().unwrap_or_else(|poisoned| poisoned.into_inner()).get(name).cloned()
    }

    pub fn views(&self) -> Vec<Arc<ViewShared>> {
        self.published
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Every view's progress against its topic's high watermarks (`system.views`, `/metrics`).
    pub fn progress(&self) -> Vec<super::progress::ViewProgress> {
        self.views().iter().map(|view| super::progress::view_progress(&self.cluster, view)).collect()
    }

    pub fn view_names(&self) -> Vec<String> {
        self.published.read().unwrap_or_else(|poisoned| poisoned.into_inner()).keys().cloned().collect()
    }

    /// Runs a view statement; the answer is a small table saying what was done.
    pub async fn execute(&self, statement: ViewStatement) -> Result<RecordBatch, ViewError> {
        let mut running = self.running.lock().await;
        let done = match statement {
            ViewStatement::ShowViews => return Ok(self.show(&running)),
            ViewStatement::CreateView { name, key, if_not_exists, sql } => {
                if running.contains_key(&name) {
                    if if_not_exists {
                        return Ok(result(format!("materialized view {name} exists")));
                    }
                    return Err(ViewError::Invalid(format!("materialized view {name} exists")));
                }
                if self.cluster.topic(&name).is_some() {
                    return Err(ViewError::Invalid(format!("{name} is a topic: views and topics share schema public")));
                }
                if running.len() >= VIEWS_MAX {
                    return Err(ViewError::Invalid(format!("the server holds its maximum of {VIEWS_MAX} views")));
                }
                let definition = ViewDefinition::analyse(&name, key.as_deref(), &sql)?;
                if self.cluster.topic(&definition.topic).is_none() {
                    return Err(ViewError::Invalid(format!("no topic {} to read (create it first)", definition.topic)));
                }
                if running.contains_key(&definition.topic) {
                    return Err(ViewError::Invalid(format!(
                        "{} is a view: views read topics, not other views",
                        definition.topic
                    )));
                }
                // A directory left by an earlier view of this name (dropped while the server
                // was down mid-drop) must not be resumed from.
                let directory = self.views_directory().join(&name);
                match fs::remove_dir_all(&directory) {
                    Ok(()) => {}
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                    Err(error) => return Err(io_error("clearing the view directory", error)),
                }
                let view = self.start(&name, key.as_deref(), &sql).await?;
                let kind = view.shared.definition.kind.as_str();
                let topic = view.shared.definition.topic.clone();
                self.publish(&name, Some(view.shared.clone()));
                running.insert(name.clone(), view);
                if let Err(error) = self.write_definitions(&running) {
                    let view = running.remove(&name).expect("inserted above");
                    self.publish(&name, None);
                    stop(view).await;
                    return Err(error);
                }
                let shared = running.get(&name).expect("inserted above").shared.clone();
                let caught_up = self.wait_for_catch_up(&shared, CREATE_CATCH_UP_WAIT).await;
                let progress = if caught_up {
                    "caught up with the topic"
                } else {
                    "still catching up: see system.views"
                };
                format!("created materialized view {name} ({kind} over topic {topic}; {progress})")
            }
            ViewStatement::CreateIndex {
                name,
                view,
                column,
                if_not_exists,
            } => {
                if let Some((owner, _)) = running.iter().find(|(_, running)| running.indexes.iter().any(|(index, _)| *index == name)) {
                    if if_not_exists {
                        return Ok(result(format!("index {name} exists (on {owner})")));
                    }
                    return Err(ViewError::Invalid(format!("index {name} exists (on view {owner})")));
                }
                let Some(target) = running.get_mut(&view) else {
                    return Err(ViewError::Invalid(format!("no materialized view {view}: indexes are on materialized views")));
                };
                if target.indexes.len() >= INDEXES_PER_VIEW_MAX {
                    return Err(ViewError::Invalid(format!("view {view} has its maximum of {INDEXES_PER_VIEW_MAX} indexes")));
                }
                validate_name(&name, "index")?;
                target.shared.store.add_index(&name, &column)?;
                target.indexes.push((name.clone(), column.clone()));
                if let Err(error) = self.write_definitions(&running) {
                    let target = running.get_mut(&view).expect("found above");
                    target.indexes.pop();
                    target.shared.store.drop_index(&name);
                    return Err(error);
                }
                format!("created index {name} on {view} ({column})")
            }
            ViewStatement::DropView { name, if_exists } => {
                let Some(view) = running.remove(&name) else {
                    if if_exists {
                        return Ok(result(format!("no materialized view {name}")));
                    }
                    return Err(ViewError::Invalid(format!("no materialized view {name}")));
                };
                self.publish(&name, None);
                if let Err(error) = self.write_definitions(&running) {
                    // Not dropped: the view goes on running and being shown, as before.
                    self.publish(&name, Some(view.shared.clone()));
                    running.insert(name, view);
                    return Err(error);
                }
                stop(view).await;
                if let Err(error) = fs::remove_dir_all(self.views_directory().join(&name)) {
                    if error.kind() != io::ErrorKind::NotFound {
                        tracing::warn!(view = %name, %error, "the dropped view's directory could not be removed");
                    }
                }
                format!("dropped materialized view {name}")
            }
            ViewStatement::DropIndex { name, if_exists } => {
                let Some((view, owner)) = running.iter_mut().find(|(_, running)| running.indexes.iter().any(|(index, _)| *index == name)) else {
                    if if_exists {
                        return Ok(result(format!("no index {name}")));
                    }
                    return Err(ViewError::Invalid(format!("no index {name}")));
                };
                let view = view.clone();
                owner.indexes.retain(|(index, _)| *index != name);
                owner.shared.store.drop_index(&name);
                self.write_definitions(&running)?;
                format!("dropped index {name} (on {view})")
            }
        };
        Ok(result(done))
    }

    fn show(&self, running: &BTreeMap<String, Running>) -> RecordBatch {
        let column = |values: Vec<String>| -> ArrayRef { Arc::new(StringArray::from(values)) };
        let views: Vec<&Running> = running.values().collect();
        RecordBatch::try_new(
            ViewStatement::ShowViews.answer_schema(),
            vec![
                column(views.iter().map(|view| view.shared.definition.name.clone()).collect()),
                column(views.iter().map(|view| view.shared.definition.kind.as_str().to_string()).collect()),
                column(views.iter().map(|view| view.shared.definition.topic.clone()).collect()),
                column(
                    views
                        .iter()
                        .map(|view| {
                            view.indexes
                                .iter()
                                .map(|(name, column)| format!("{name}({column})"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        })
                        .collect(),
                ),
                column(views.iter().map(|view| view.shared.definition.sql.clone()).collect()),
            ],
        )
        .expect("columns match the schema")
    }

    /// Stops every view after a last checkpoint (graceful shutdown).
    pub async fn shutdown(&self) {
        let mut running = self.running.lock().await;
        let views = std::mem::take(&mut *running);
        for (name, view) in views {
            self.publish(&name, None);
            stop(view).await;
        }
    }

    /// Stops every view without a last checkpoint, as a crash would: what they applied since
    /// their last checkpoint is lost and re-applied by the next `open` (crash tests).
    pub async fn abort(&self) {
        let mut running = self.running.lock().await;
        for (name, view) in std::mem::take(&mut *running) {
            self.publish(&name, None);
            view.task.abort();
            let _ = view.task.await;
        }
    }

    /// Waits until `view` has applied its topic up to the high watermarks of now, for `wait`
    /// at most (and not once the view has stopped on a failure): whether it has.
    async fn wait_for_catch_up(&self, view: &Arc<ViewShared>, wait: Duration) -> bool {
        let marks: Vec<(i32, i64)> = super::progress::view_progress(&self.cluster, view)
            .partitions
            .iter()
            .map(|p| (p.partition, p.high_watermark))
            .collect();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let progress = super::progress::view_progress(&self.cluster, view);
            let applied = |partition: i32| {
                progress
                    .partitions
                    .iter()
                    .find(|p| p.partition == partition)
                    .map_or(i64::MAX, |p| p.last_applied_offset + 1)
            };
            if marks.iter().all(|(partition, mark)| applied(*partition) >= *mark) {
                return true;
            }
            if view.lock_status().failure.is_some() || tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(CATCH_UP_POLL).await;
        }
    }

    /// Whether every view has applied its topic up to the high watermark now (a view whose
    /// topic is gone never has).
    pub fn caught_up(&self) -> bool {
        self.views().iter().all(|view| {
            self.cluster.topic(&view.definition.topic).is_some()
                && super::progress::view_progress(&self.cluster, view)
                    .partitions
                    .iter()
                    .all(|partition| partition.lag == 0)
        })
    }
}

fn result(text: String) -> RecordBatch {
    RecordBatch::try_new(super::statement::result_schema(), vec![Arc::new(StringArray::from(vec![text]))]).expect("one column")
}

async fn stop(view: Running) {
    let _ = view.stop.send(true);
    if let Err(error) = view.task.await {
        tracing::error!(%error, "a view task panicked");
    }
}
