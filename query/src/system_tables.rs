//! The broker's own state as tables in the `system` schema: `topics`, `topic_configs`,
//! `partitions`, `zones` and `consumer_groups` (committed offsets and lag per partition).
//!
//! Each is computed when a query scans it (a snapshot per scan, so it is current and costs
//! nothing while nobody asks) and served through DataFusion's `MemTable`, which already does
//! projection, filters and limits on in-memory batches.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use broker::cluster::Cluster;
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, ListArray, ListBuilder, StringArray, StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{SchemaProvider, Session};
use datafusion::common::Result;
use datafusion::datasource::{MemTable, TableProvider, TableType};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

/// Which system table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SystemTableKind {
    Topics,
    TopicConfigs,
    Partitions,
    Zones,
    ConsumerGroups,
}

impl SystemTableKind {
    pub const ALL: [SystemTableKind; 5] = [Self::Topics, Self::TopicConfigs, Self::Partitions, Self::Zones, Self::ConsumerGroups];

    pub fn name(self) -> &'static str {
        match self {
            Self::Topics => "topics",
            Self::TopicConfigs => "topic_configs",
            Self::Partitions => "partitions",
            Self::Zones => "zones",
            Self::ConsumerGroups => "consumer_groups",
        }
    }

    fn schema(self) -> SchemaRef {
        let utf8 = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
        let int32 = |name: &str, nullable| Field::new(name, DataType::Int32, nullable);
        let int64 = |name: &str, nullable| Field::new(name, DataType::Int64, nullable);
        Arc::new(Schema::new(match self {
            Self::Topics => vec![utf8("name", false), utf8("topic_id", false), int32("partitions", false)],
            Self::TopicConfigs => vec![
                utf8("topic", false),
                utf8("name", false),
                utf8("value", false),
                Field::new("is_default", DataType::Boolean, false),
            ],
            Self::Partitions => vec![
                utf8("topic", false),
                int32("partition", false),
                int64("log_start_offset", false),
                int64("high_watermark", false),
                int64("log_end_offset", false),
                int64("size_bytes", false),
                int32("zones", false),
                utf8("failure", true),
                // The device has no free zone for data appends: produce answers
                // KAFKA_STORAGE_ERROR until zones are reclaimed (the same for every row).
                Field::new("storage_full", DataType::Boolean, false),
            ],
            Self::ConsumerGroups => vec![
                utf8("group_id", false),
                utf8("protocol", false),
                utf8("state", false),
                int32("members", false),
                utf8("topic", true),
                int32("partition", true),
                int64("committed_offset", true),
                utf8("metadata", true),
                int64("high_watermark", true),
                int64("lag", true),
            ],
            Self::Zones => vec![
                int64("zone", false),
                utf8("state", false),
                int64("write_pointer_bytes", false),
                int64("capacity_bytes", false),
                utf8("topic", true),
                int32("partition", true),
                int32("partitions", false),
                // Every topic with data in the zone, sorted (zones are shared): what the
                // dashboard's zone map filters on.
                Field::new("topics", DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), false),
                int64("live_bytes", false),
                int32("stream", true),
                Field::new("write_amplification", DataType::Float64, false),
            ],
        }))
    }
}

/// One system table.
pub struct SystemTable {
    kind: SystemTableKind,
    cluster: Arc<Cluster>,
    schema: SchemaRef,
}

impl fmt::Debug for SystemTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SystemTable({})", self.kind.name())
    }
}

impl SystemTable {
    pub fn new(kind: SystemTableKind, cluster: Arc<Cluster>) -> SystemTable {
        SystemTable { kind, cluster, schema: kind.schema() }
    }

    /// The table's rows now.
    pub fn snapshot(&self) -> Result<RecordBatch> {
        let columns = match self.kind {
            SystemTableKind::Topics => self.topics(),
            SystemTableKind::TopicConfigs => self.topic_configs(),
            SystemTableKind::Partitions => self.partitions(),
            SystemTableKind::Zones => self.zones(),
            SystemTableKind::ConsumerGroups => self.consumer_groups(),
        };
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    fn topics(&self) -> Vec<ArrayRef> {
        let topics = self.cluster.topics();
        vec![
            Arc::new(StringArray::from_iter_values(topics.iter().map(|topic| topic.name.clone()))),
            Arc::new(StringArray::from_iter_values(topics.iter().map(|topic| topic_id_text(&topic.id)))),
            Arc::new(Int32Array::from_iter_values(topics.iter().map(|topic| topic.partition_count()))),
        ]
    }

    fn topic_configs(&self) -> Vec<ArrayRef> {
        let mut rows: Vec<(String, &'static str, String, bool)> = Vec::new();
        for topic in self.cluster.topics() {
            for entry in topic.config().describe() {
                rows.push((topic.name.clone(), entry.name, entry.value, entry.is_default));
            }
        }
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|row| row.0.as_str()))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|row| row.1))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|row| row.2.as_str()))),
            Arc::new(BooleanArray::from_iter(rows.iter().map(|row| Some(row.3)))),
        ]
    }

    fn partitions(&self) -> Vec<ArrayRef> {
        struct Row {
            topic: String,
            partition: i32,
            offsets: (i64, i64, i64),
            size_bytes: u64,
            zones: usize,
            failure: Option<String>,
        }
        let storage_full = self.cluster.store().allocator().storage_full();
        let mut rows = Vec::new();
        for topic in self.cluster.topics() {
            for partition in topic.partitions() {
                if let Ok(status) = partition.reader().status() {
                    rows.push(Row {
                        topic: topic.name.clone(),
                        partition: partition.index,
                        offsets: (status.bounds.log_start_offset, status.bounds.high_watermark, status.log_end_offset),
                        size_bytes: status.size_bytes,
                        zones: status.zones.len(),
                        failure: status.failure,
                    });
                }
            }
        }
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|row| row.topic.as_str()))),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|row| row.partition))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|row| row.offsets.0))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|row| row.offsets.1))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|row| row.offsets.2))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|row| saturating_i64(row.size_bytes)))),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|row| i32::try_from(row.zones).unwrap_or(i32::MAX)))),
            Arc::new(StringArray::from_iter(rows.iter().map(|row| row.failure.as_deref()))),
            Arc::new(BooleanArray::from_iter(rows.iter().map(|_| Some(storage_full)))),
        ]
    }

    /// One row per zone. Zones are shared by partitions: `topic` and `partition` name the one
    /// holding the most live bytes there, `partitions` how many hold some, `topics` which.
    fn zones(&self) -> Vec<ArrayRef> {
        let holders = self.zone_holders();
        let store = self.cluster.store();
        let zones = store.device().report_zones();
        let uses = store.allocator().zone_uses();
        let write_amplification = store.allocator().write_amplification();
        let usage = |zone: u32| uses.get(zone as usize).copied().flatten();
        let owner = |zone: u32| holders.get(&zone).map(|holder| &holder.largest);
        vec![
            Arc::new(Int64Array::from_iter_values(zones.iter().map(|zone| i64::from(zone.id)))),
            Arc::new(StringArray::from_iter_values(zones.iter().map(|zone| zone.state.to_string()))),
            Arc::new(Int64Array::from_iter_values(zones.iter().map(|zone| saturating_i64(zone.write_pointer_bytes)))),
            Arc::new(Int64Array::from_iter_values(zones.iter().map(|zone| saturating_i64(zone.capacity_bytes)))),
            Arc::new(StringArray::from_iter(zones.iter().map(|zone| owner(zone.id).map(|(topic, _)| topic.as_str())))),
            Arc::new(Int32Array::from_iter(zones.iter().map(|zone| owner(zone.id).map(|(_, partition)| *partition)))),
            Arc::new(Int32Array::from_iter_values(zones.iter().map(|zone| holders.get(&zone.id).map_or(0, |holder| holder.partitions as i32)))),
            Arc::new(topic_lists(zones.iter().map(|zone| holders.get(&zone.id).map(|holder| &holder.topics)))),
            Arc::new(Int64Array::from_iter_values(zones.iter().map(|zone| usage(zone.id).map_or(0, |usage| saturating_i64(usage.live_bytes))))),
            Arc::new(Int32Array::from_iter(zones.iter().map(|zone| usage(zone.id).map(|usage| i32::from(usage.stream))))),
            Arc::new(Float64Array::from_iter_values(zones.iter().map(|_| write_amplification))),
        ]
    }
}

/// Who holds data in one zone.
struct ZoneHolders {
    /// Partitions with data there.
    partitions: usize,
    /// The partition holding the most bytes there.
    largest: (String, i32),
    largest_bytes: u64,
    /// Every topic with data there.
    topics: BTreeSet<String>,
}

impl SystemTable {
    /// Per zone, the partitions holding data in it (from each partition's index).
    fn zone_holders(&self) -> HashMap<u32, ZoneHolders> {
        let mut holders: HashMap<u32, ZoneHolders> = HashMap::new();
        for topic in self.cluster.topics() {
            for partition in topic.partitions() {
                let Ok(zones) = partition.reader().zone_bytes() else { continue };
                for (zone, bytes) in zones {
                    let holder = holders.entry(zone).or_insert_with(|| ZoneHolders {
                        partitions: 0,
                        largest: (topic.name.clone(), partition.index),
                        largest_bytes: 0,
                        topics: BTreeSet::new(),
                    });
                    holder.partitions += 1;
                    if bytes > holder.largest_bytes {
                        (holder.largest, holder.largest_bytes) = ((topic.name.clone(), partition.index), bytes);
                    }
                    if !holder.topics.contains(&topic.name) {
                        holder.topics.insert(topic.name.clone());
                    }
                }
            }
        }
        holders
    }
}

/// A list column of topic names per row (an empty list where there are none).
fn topic_lists<'a>(rows: impl Iterator<Item = Option<&'a BTreeSet<String>>>) -> ListArray {
    let item = Arc::new(Field::new("item", DataType::Utf8, true));
    let mut builder = ListBuilder::new(StringBuilder::new()).with_field(item);
    for topics in rows {
        for topic in topics.into_iter().flatten() {
            builder.values().append_value(topic);
        }
        builder.append(true);
    }
    builder.finish()
}

impl SystemTable {
    /// One row per committed offset of each group (a group without offsets: one row with null
    /// offset columns), with the partition's high watermark and the lag behind it.
    fn consumer_groups(&self) -> Vec<ArrayRef> {
        struct Row {
            group_id: String,
            protocol: &'static str,
            state: &'static str,
            members: usize,
            offset: Option<(String, i32, i64, Option<String>)>,
        }
        // Copied out under the coordinator's lock, which is released before any partition lock
        // is taken (never both at once).
        let mut rows = Vec::new();
        {
            let coordinator = self.cluster.groups().coordinator();
            let mut described = std::collections::BTreeSet::new();
            for group in coordinator.consumer_groups() {
                described.insert(group.group_id.clone());
                let offsets: Vec<_> = coordinator.group(&group.group_id).map(|classic| classic.offsets().iter().collect()).unwrap_or_default();
                let row = |offset| Row { group_id: group.group_id.clone(), protocol: "consumer", state: group.state_name(), members: group.members.len(), offset };
                if offsets.is_empty() {
                    rows.push(row(None));
                }
                for ((topic, partition), committed) in offsets {
                    rows.push(row(Some((topic.clone(), *partition, committed.offset, committed.metadata.clone()))));
                }
            }
            for group in coordinator.groups().filter(|group| !described.contains(&group.group_id)) {
                let row = |offset| Row { group_id: group.group_id.clone(), protocol: "classic", state: group.state().name(), members: group.member_count(), offset };
                if group.offsets().is_empty() {
                    rows.push(row(None));
                }
                for ((topic, partition), committed) in group.offsets() {
                    rows.push(row(Some((topic.clone(), *partition, committed.offset, committed.metadata.clone()))));
                }
            }
        }
        let high_watermark = |topic: &str, partition: i32| {
            self.cluster.topic(topic)?.partition(partition)?.reader().bounds().ok().map(|bounds| bounds.high_watermark)
        };
        let watermarks: Vec<Option<i64>> =
            rows.iter().map(|row| row.offset.as_ref().and_then(|(topic, partition, _, _)| high_watermark(topic, *partition))).collect();
        fn offset(row: &Row) -> Option<&(String, i32, i64, Option<String>)> {
            row.offset.as_ref()
        }
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|row| row.group_id.as_str()))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|row| row.protocol))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|row| row.state))),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|row| i32::try_from(row.members).unwrap_or(i32::MAX)))),
            Arc::new(StringArray::from_iter(rows.iter().map(|row| offset(row).map(|o| o.0.as_str())))),
            Arc::new(Int32Array::from_iter(rows.iter().map(|row| offset(row).map(|o| o.1)))),
            Arc::new(Int64Array::from_iter(rows.iter().map(|row| offset(row).map(|o| o.2)))),
            Arc::new(StringArray::from_iter(rows.iter().map(|row| offset(row).and_then(|o| o.3.as_deref())))),
            Arc::new(Int64Array::from_iter(watermarks.iter().copied())),
            Arc::new(Int64Array::from_iter(rows.iter().zip(&watermarks).map(|(row, watermark)| {
                // Kafka's lag: how far the committed position is behind the end, never negative.
                Some((watermark.as_ref()? - offset(row)?.2).max(0))
            }))),
        ]
    }
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A topic id as Kafka tools print it: URL-safe base64 without padding.
pub fn topic_id_text(id: &[u8; 16]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut text = String::with_capacity(22);
    for chunk in id.chunks(3) {
        let bits = chunk.iter().enumerate().fold(0u32, |bits, (i, byte)| bits | u32::from(*byte) << (16 - 8 * i));
        for sextet in 0..=chunk.len() {
            text.push(ALPHABET[(bits >> (18 - 6 * sextet) & 63) as usize] as char);
        }
    }
    text
}

#[async_trait]
impl TableProvider for SystemTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let table = MemTable::try_new(self.schema.clone(), vec![vec![self.snapshot()?]])?;
        table.scan(state, projection, filters, limit).await
    }
}

/// The `system` schema.
pub struct SystemSchema {
    cluster: Arc<Cluster>,
}

impl fmt::Debug for SystemSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SystemSchema")
    }
}

impl SystemSchema {
    pub fn new(cluster: Arc<Cluster>) -> SystemSchema {
        SystemSchema { cluster }
    }
}

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        SystemTableKind::ALL.iter().map(|kind| kind.name().to_string()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Ok(SystemTableKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .map(|kind| Arc::new(SystemTable::new(kind, self.cluster.clone())) as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        SystemTableKind::ALL.iter().any(|kind| kind.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_ids_print_as_kafka_does() {
        assert_eq!(topic_id_text(&[0; 16]), "AAAAAAAAAAAAAAAAAAAAAA");
        // Kafka's Uuid.toString of 0x00..01: the last sextets carry the 1.
        let mut id = [0u8; 16];
        id[15] = 1;
        assert_eq!(topic_id_text(&id), "AAAAAAAAAAAAAAAAAAAAAQ");
        assert_eq!(topic_id_text(&[0xff; 16]), "_____________________w");
    }
}
