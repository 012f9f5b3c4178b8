use super::*;

const TIMEOUT_MS: i32 = 60_000;

fn init(id: &str, expected: Option<(i64, i16)>) -> InitProducerId {
    InitProducerId { transactional_id: id.to_string(), timeout_ms: TIMEOUT_MS, expected }
}

fn partition(topic: &str, partition: i32) -> TxnTarget {
    TxnTarget::Partition { topic: topic.to_string(), partition }
}

/// A coordinator whose transitions are made durable at once (as the log would, then `apply`).
struct Harness {
    coordinator: TxnCoordinator,
    next_producer_id: i64,
}

impl Harness {
    fn new() -> Harness {
        Harness { coordinator: TxnCoordinator::new(TxnConfig::default()), next_producer_id: 1000 }
    }

    fn durable(&mut self, transition: Transition) -> Reply {
        self.coordinator.apply(transition.record);
        transition.reply
    }

    fn init(&mut self, id: &str, expected: Option<(i64, i16)>, now_ms: i64) -> Result<Reply, ResponseError> {
        let next = &mut self.next_producer_id;
        let allocate = || {
            *next += 1;
            Ok(*next)
        };
        let transition = self.coordinator.init_producer_id(&init(id, expected), now_ms, allocate)?;
        Ok(self.durable(transition))
    }

    fn producer(&mut self, id: &str, expected: Option<(i64, i16)>) -> (i64, i16) {
        match self.init(id, expected, 0) {
            Ok(Reply::Producer { producer_id, producer_epoch }) => (producer_id, producer_epoch),
            other => panic!("InitProducerId answered {other:?}"),
        }
    }

    fn add(&mut self, id: &str, (producer_id, epoch): (i64, i16), targets: &[TxnTarget], now_ms: i64) -> Result<bool, ResponseError> {
        let transition = self.coordinator.add_targets(id, producer_id, epoch, targets, now_ms)?;
        Ok(transition.map(|transition| self.durable(transition)).is_some())
    }

    fn end(&mut self, id: &str, (producer_id, epoch): (i64, i16), commit: bool) -> Result<bool, ResponseError> {
        let transition = self.coordinator.end_txn(id, producer_id, epoch, commit, 0)?;
        Ok(transition.map(|transition| self.durable(transition)).is_some())
    }

    /// Writes the prepared transaction's markers (here: returns them) and completes it.
    fn finish(&mut self, id: &str) -> Markers {
        let markers = self.coordinator.markers(id).expect("a prepared transaction");
        let transition = self.coordinator.complete(id, 0).expect("completes");
        self.durable(transition);
        markers
    }

    fn state(&self, id: &str) -> TxnState {
        self.coordinator.get(id).expect("known id").state
    }
}

#[test]
fn a_new_id_gets_a_producer_id_and_each_init_bumps_its_epoch() {
    let mut h = Harness::new();
    let first = h.producer("t", None);
    assert_eq!(first, (1001, 0));
    assert_eq!(h.producer("t", None), (1001, 1), "a new producer of the id fences the old one");
    // A client with no producer id yet sends -1/-1: no expectation, a bump.
    assert_eq!(h.producer("t", Some((-1, -1))), (1001, 2));
    let record = h.coordinator.get("t").unwrap();
    assert_eq!((record.last_producer_id, record.last_producer_epoch), (1001, 1));
    assert_eq!(h.producer("other", None), (1002, 0), "ids have producer ids of their own");
}

#[test]
fn kip_360_a_retry_gets_the_same_answer_and_a_stale_producer_is_fenced() {
    let mut h = Harness::new();
    let first = h.producer("t", None);
    let second = h.producer("t", Some(first));
    assert_eq!(second, (first.0, first.1 + 1));
    // The answer was lost: the client retries with what it had, and gets the same again.
    assert_eq!(h.producer("t", Some(first)), second);
    // A producer that knows neither the current nor the previous pair is a zombie.
    assert_eq!(h.init("t", Some((first.0, 7)), 0), Err(ResponseError::ProducerFenced));
    assert_eq!(h.producer("t", Some(second)), (first.0, first.1 + 2));
}

#[test]
fn a_new_producer_aborts_the_transaction_its_predecessor_left_open() {
    let mut h = Harness::new();
    let old = h.producer("t", None);
    assert!(h.add("t", old, &[partition("a", 0), partition("b", 1)], 10).unwrap());
    assert_eq!(h.state("t"), TxnState::Ongoing);
    // The new producer is told to retry while the open transaction is aborted, fenced.
    assert_eq!(h.init("t", None, 20), Ok(Reply::RetryLater));
    assert_eq!(h.state("t"), TxnState::PrepareAbort);
    assert_eq!(h.end("t", old, true), Err(ResponseError::ProducerFenced), "the zombie cannot commit");
    assert_eq!(h.init("t", None, 21), Err(ResponseError::ConcurrentTransactions), "markers not written yet");
    let markers = h.finish("t");
    assert!(!markers.commit);
    assert_eq!(markers.producer_epoch, old.1 + 1, "markers carry the fencing epoch");
    assert_eq!(markers.targets, vec![partition("a", 0), partition("b", 1)]);
    assert_eq!(h.state("t"), TxnState::CompleteAbort);
    assert_eq!(h.producer("t", None), (old.0, old.1 + 2));
}

#[test]
fn end_txn_commits_or_aborts_once_and_answers_retries() {
    let mut h = Harness::new();
    let producer = h.producer("t", None);
    assert_eq!(h.end("t", producer, true), Err(ResponseError::InvalidTxnState), "nothing in progress");
    h.add("t", producer, &[partition("a", 0), TxnTarget::Group("g".into())], 0).unwrap();
    // While the prepare is on its way to the log, everything else waits.
    let pending = h.coordinator.end_txn("t", producer.0, producer.1, true, 0).unwrap().unwrap();
    assert_eq!(h.coordinator.end_txn("t", producer.0, producer.1, true, 0), Err(ResponseError::ConcurrentTransactions));
    assert_eq!(h.coordinator.add_targets("t", producer.0, producer.1, &[partition("c", 0)], 0), Err(ResponseError::ConcurrentTransactions));
    h.durable(pending);
    assert_eq!(h.state("t"), TxnState::PrepareCommit);
    assert_eq!(h.end("t", producer, true), Err(ResponseError::ConcurrentTransactions), "a retry while markers go out");
    assert_eq!(h.end("t", producer, false), Err(ResponseError::InvalidTxnState), "an abort of a commit");
    assert_eq!(h.coordinator.prepared_markers().len(), 1, "what a restart writes again");
    let markers = h.finish("t");
    assert!(markers.commit && markers.targets.contains(&TxnTarget::Group("g".into())));
    assert_eq!(h.state("t"), TxnState::CompleteCommit);
    assert_eq!(h.end("t", producer, true), Ok(false), "a retry of the completed commit: answered at once");
    assert_eq!(h.end("t", producer, false), Err(ResponseError::InvalidTxnState));
    assert!(h.coordinator.prepared_markers().is_empty());
}

#[test]
fn add_targets_checks_the_producer_and_starts_a_fresh_transaction() {
    let mut h = Harness::new();
    assert_eq!(h.add("nobody", (1, 0), &[partition("a", 0)], 0), Err(ResponseError::InvalidProducerIdMapping));
    let producer = h.producer("t", None);
    assert_eq!(h.add("t", (producer.0 + 1, producer.1), &[partition("a", 0)], 0), Err(ResponseError::InvalidProducerIdMapping));
    assert_eq!(h.add("t", (producer.0, producer.1 + 1), &[partition("a", 0)], 0), Err(ResponseError::ProducerFenced));
    assert_eq!(h.add("", producer, &[partition("a", 0)], 0), Err(ResponseError::InvalidRequest));
    assert_eq!(h.add("t", producer, &[partition("a", 0)], 100), Ok(true));
    assert_eq!(h.add("t", producer, &[partition("a", 0)], 200), Ok(false), "already in: nothing written");
    assert_eq!(h.add("t", producer, &[partition("a", 1)], 300), Ok(true));
    let record = h.coordinator.get("t").unwrap();
    assert_eq!((record.start_ms, record.targets.len()), (100, 2), "the transaction started at its first target");
    h.end("t", producer, false).unwrap();
    h.finish("t");
    assert_eq!(h.add("t", producer, &[partition("b", 0)], 400), Ok(true));
    let record = h.coordinator.get("t").unwrap();
    assert_eq!((record.start_ms, record.targets.len()), (400, 1), "the next transaction starts empty");
}

#[test]
fn limits_and_timeouts_are_refused_with_kafkas_codes() {
    let mut h = Harness::new();
    for timeout_ms in [0, -1, TRANSACTION_TIMEOUT_MAX_MS + 1] {
        let request = InitProducerId { timeout_ms, ..init("t", None) };
        assert_eq!(h.coordinator.init_producer_id(&request, 0, || Ok(1)), Err(ResponseError::InvalidTransactionTimeout));
    }
    assert_eq!(h.init(&"x".repeat(TRANSACTIONAL_ID_BYTES_MAX + 1), None, 0), Err(ResponseError::InvalidRequest));
    let config = TxnConfig { ids_max: 1, targets_max: 2, ..TxnConfig::default() };
    h.coordinator = TxnCoordinator::new(config);
    let producer = h.producer("t", None);
    assert_eq!(h.init("second", None, 0), Err(ResponseError::CoordinatorNotAvailable), "ids are bounded");
    assert_eq!(h.add("t", producer, &[partition("a", 0), partition("a", 1), partition("a", 2)], 0), Err(ResponseError::InvalidRequest));
    assert_eq!(h.state("t"), TxnState::Empty, "a refused add changes nothing");
    assert!(h.coordinator.add_targets("t", producer.0, producer.1, &[partition("a", 0)], 0).is_ok(), "not left pending");
}

#[test]
fn a_transaction_open_past_its_timeout_is_aborted_and_its_producer_fenced() {
    let mut h = Harness::new();
    let producer = h.producer("t", None);
    h.add("t", producer, &[partition("a", 0)], 1_000).unwrap();
    assert!(h.coordinator.expire(1_000 + i64::from(TIMEOUT_MS) - 1).is_empty());
    let due = h.coordinator.expire(1_000 + i64::from(TIMEOUT_MS));
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].record.state, due[0].record.producer_epoch), (TxnState::PrepareAbort, producer.1 + 1));
    assert!(h.coordinator.expire(i64::MAX / 2).is_empty(), "pending: not expired twice");
    for transition in due {
        h.durable(transition);
    }
    assert_eq!(h.end("t", producer, true), Err(ResponseError::ProducerFenced));
    assert!(!h.finish("t").commit);
}

#[test]
fn an_exhausted_epoch_moves_to_a_new_producer_id() {
    let mut h = Harness::new();
    let (producer_id, _) = h.producer("t", None);
    let mut record = h.coordinator.get("t").unwrap().clone();
    record.producer_epoch = i16::MAX - 1;
    h.coordinator.apply(record);
    assert_eq!(h.producer("t", None), (producer_id + 1, 0));
    let record = h.coordinator.get("t").unwrap();
    assert_eq!((record.last_producer_id, record.last_producer_epoch), (producer_id, i16::MAX - 1));
}

#[test]
fn an_abandoned_write_leaves_the_id_as_it_was() {
    let mut h = Harness::new();
    let transition = h.coordinator.init_producer_id(&init("t", None), 0, || Ok(7)).unwrap();
    assert_eq!(h.coordinator.init_producer_id(&init("t", None), 0, || Ok(8)), Err(ResponseError::ConcurrentTransactions));
    h.coordinator.abandon(&transition.record.transactional_id);
    assert!(h.coordinator.get("t").is_none(), "a first record never written: no id");
    let producer = h.producer("t", None);
    let _lost = h.coordinator.add_targets("t", producer.0, producer.1, &[partition("a", 0)], 0).unwrap();
    h.coordinator.abandon("t");
    assert_eq!(h.state("t"), TxnState::Empty);
    assert_eq!(h.add("t", producer, &[partition("a", 0)], 0), Ok(true));
}

#[test]
fn idle_ids_expire_and_replayed_records_rebuild_the_state() {
    let mut h = Harness::new();
    let mut log = Vec::new();
    let producer = h.producer("t", None);
    log.push(h.coordinator.get("t").unwrap().clone());
    let transition = h.coordinator.add_targets("t", producer.0, producer.1, &[partition("a", 0)], 5).unwrap().unwrap();
    log.push(transition.record.clone());
    h.durable(transition);
    let transition = h.coordinator.end_txn("t", producer.0, producer.1, true, 6).unwrap().unwrap();
    log.push(transition.record.clone());
    h.durable(transition);
    // A restart: replaying the log gives the same state, prepared markers included.
    let mut replayed = TxnCoordinator::new(TxnConfig::default());
    for record in log.iter().map(|record| serde_json::to_string(record).unwrap()) {
        replayed.apply(serde_json::from_str(&record).unwrap());
    }
    assert_eq!(replayed.get("t"), h.coordinator.get("t"));
    assert_eq!(replayed.prepared_markers(), h.coordinator.prepared_markers());
    h.finish("t");
    let idle_since = h.coordinator.get("t").unwrap().update_ms;
    assert!(h.coordinator.expire(idle_since + TRANSACTIONAL_ID_EXPIRATION_MS - 1).is_empty());
    let due = h.coordinator.expire(idle_since + TRANSACTIONAL_ID_EXPIRATION_MS);
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].record.state, TxnState::Dead);
    h.durable(due.into_iter().next().unwrap());
    assert!(h.coordinator.get("t").is_none() && h.coordinator.records().next().is_none());
}

#[test]
fn produce_is_verified_against_the_producers_ongoing_transaction() {
    let mut h = Harness::new();
    let producer = h.producer("app", None);
    let (producer_id, epoch) = producer;
    let verify = |h: &Harness, epoch: i16, topic: &str| h.coordinator.verify(producer_id, epoch, &partition(topic, 0));
    assert_eq!(verify(&h, epoch, "t"), Err(ResponseError::InvalidTxnState), "no transaction yet");
    assert!(h.add("app", producer, &[partition("t", 0)], 0).unwrap());
    assert_eq!(verify(&h, epoch, "t"), Ok(()));
    assert_eq!(verify(&h, epoch, "other"), Err(ResponseError::InvalidTxnState), "not added");
    assert_eq!(h.coordinator.verify(producer_id + 1, epoch, &partition("t", 0)), Err(ResponseError::InvalidTxnState), "unknown producer");
    assert_eq!(h.coordinator.verify(producer_id, epoch, &TxnTarget::Group("g".into())), Err(ResponseError::InvalidTxnState), "no AddOffsetsToTxn");
    assert!(h.end("app", producer, true).unwrap());
    assert_eq!(verify(&h, epoch, "t"), Err(ResponseError::InvalidTxnState), "prepared: no more appends");
    h.finish("app");
    let next = h.producer("app", None);
    assert_eq!(next.0, producer_id, "the same id, its epoch bumped");
    assert_eq!(verify(&h, epoch, "t"), Err(ResponseError::ProducerFenced), "the old epoch is fenced");
}
