//! The order path: gateway tasks -> bounded lock-free ring -> journaler
//! thread (assigns sequence and timestamp, appends, group-commits) -> engine
//! thread (applies in sequence) -> publisher thread (read models, streams,
//! then the reply to the waiting request). A command's result is released
//! only after its batch is durable under the journal's policy, so nothing
//! acknowledged is ever lost, and only after every read model applied it.
//!
//! Bounds: the ring has a fixed capacity and a full ring is refused at once
//! (`SubmitError::Full`, answered 503); the journaler -> engine and engine ->
//! publisher hand-offs are bounded channels, so a slow publisher pushes back
//! to the ring instead of growing memory. The engine thread does no I/O: it
//! applies commands and hands outcomes and reply handles to the publisher,
//! which answers with non-blocking one-shot sends.
//!
//! A journal failure (failed fsync) poisons the pipeline: every waiting and
//! later request is refused and the server must be restarted; the journal
//! is never assumed durable when it is not.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam::queue::ArrayQueue;
use engine::{ClientOrderId, Command, Engine, Event};

/// What the engine did with one command.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub seq: u64,
    pub ts_ms: u64,
    pub command: Command,
    pub events: Vec<Event>,
    /// The `newClientOrderId` a cancel request gave itself (Binance's
    /// `clientOrderId` of the cancel answer and `c` of the CANCELED
    /// executionReport). Not journaled: it only names the live answer and
    /// the live stream events of this request.
    pub cancel_client_id: Option<ClientOrderId>,
}

impl Outcome {
    /// The client order id of the cancel that ended `order` in this
    /// command: the cancel request's own `newClientOrderId` when it gave
    /// one (cancel, cancelReplace), otherwise one derived from the journal
    /// sequence and the order id, so the cancel answer and the
    /// executionReport name the cancel alike (`x<seq hex>o<order hex>`, at
    /// most 34 characters).
    pub fn cancel_client_id_for(&self, order: engine::OrderId) -> ClientOrderId {
        let named = matches!(
            self.command,
            Command::CancelOrder { .. } | Command::CancelReplace { .. }
        );
        match self.cancel_client_id {
            Some(c) if named => c,
            _ => ClientOrderId::new(&format!("x{:x}o{:x}", self.seq, order.0))
                .unwrap_or(ClientOrderId::NONE),
        }
    }
}

pub type Reply = tokio::sync::oneshot::Sender<Result<Arc<Outcome>, PipelineError>>;

#[derive(Debug)]
pub struct Submission {
    pub command: Command,
    pub reply: Option<Reply>,
    /// See [`Outcome::cancel_client_id`].
    pub cancel_client_id: Option<ClientOrderId>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipelineError {
    #[error("the journal failed ({0}); the exchange stopped accepting commands")]
    JournalFailed(String),
    #[error("the exchange is shutting down")]
    ShuttingDown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("the order ring is full")]
    Full,
    #[error("the exchange is shutting down")]
    Closed,
    #[error("the journal failed; the exchange stopped accepting commands")]
    Poisoned,
}

/// How idle threads wait for work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStrategy {
    /// Spin briefly, then park until woken (default: fair on small machines).
    Park,
    /// Busy-spin (lowest latency, burns a core: for machines with spare cores).
    Spin,
}

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub ring_capacity: usize,
    /// Most commands in one group commit.
    pub max_batch: usize,
    pub wait: WaitStrategy,
    /// CPU to pin the engine thread to.
    pub engine_core: Option<usize>,
    /// Least time between the starts of two group commits while commands
    /// keep coming (zero: commit as soon as the previous commit is done).
    /// It applies after a commit that held several commands or saw more
    /// queue up meanwhile (clients submitting concurrently, so more will
    /// join). One command at a time (a lone client waiting for each answer
    /// before its next request) is never delayed.
    pub commit_interval: Duration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            ring_capacity: 65_536,
            max_batch: 4_096,
            wait: WaitStrategy::Park,
            engine_core: None,
            commit_interval: Duration::from_micros(crate::config::DEFAULT_COMMIT_INTERVAL_US),
        }
    }
}

/// Counters exported on /metrics and /health.
#[derive(Debug, Default)]
pub struct PipelineStats {
    pub submitted: AtomicU64,
    pub rejected_full: AtomicU64,
    pub batches: AtomicU64,
    pub journaled: AtomicU64,
    pub applied: AtomicU64,
    pub last_batch_size: AtomicU64,
    pub last_commit_us: AtomicU64,
    /// Group commits that waited for the rest of `commit_interval`.
    pub delayed_commits: AtomicU64,
    /// Durations of the group commits (append + flush).
    pub commit_time: LatencyHistogram,
    /// From a command's push onto the ring to its submitter resuming with
    /// the durable, applied outcome (journal, engine, publisher and the
    /// wake-up of the waiting task).
    pub ack_time: LatencyHistogram,
}

/// Upper bounds (microseconds) of the latency histograms' buckets; one more
/// bucket counts everything slower.
pub const LATENCY_BUCKETS_US: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
];

/// A Prometheus-style latency histogram: two relaxed atomic adds per
/// sample, so the recording thread never waits for a reader.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

impl LatencyHistogram {
    pub fn record(&self, us: u64) {
        let i = LATENCY_BUCKETS_US.partition_point(|&b| b < us);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Cumulative counts per bound (`le`), the last one `+Inf`.
    pub fn cumulative(&self) -> [u64; LATENCY_BUCKETS_US.len() + 1] {
        let mut out = [0; LATENCY_BUCKETS_US.len() + 1];
        let mut total = 0;
        for (o, b) in out.iter_mut().zip(&self.buckets) {
            total += b.load(Ordering::Relaxed);
            *o = total;
        }
        out
    }

    pub fn sum_us(&self) -> u64 {
        self.sum_us.load(Ordering::Relaxed)
    }
}

struct Batch {
    first_seq: u64,
    ts_ms: u64,
    subs: Vec<Submission>,
}

struct Shared {
    ring: ArrayQueue<Submission>,
    closed: AtomicBool,
    poisoned: AtomicBool,
    stats: PipelineStats,
    journaler: std::sync::OnceLock<std::thread::Thread>,
}

/// Handle used by gateway tasks to submit commands.
#[derive(Clone)]
pub struct Submitter {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Submitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submitter")
            .field("queued", &self.shared.ring.len())
            .finish()
    }
}

impl Submitter {
    /// Queue a command; never waits. A full ring is refused at once.
    pub fn submit(&self, sub: Submission) -> Result<(), SubmitError> {
        let s = &self.shared;
        if s.poisoned.load(Ordering::Acquire) {
            return Err(SubmitError::Poisoned);
        }
        if s.closed.load(Ordering::Acquire) {
            return Err(SubmitError::Closed);
        }
        if s.ring.push(sub).is_err() {
            s.stats.rejected_full.fetch_add(1, Ordering::Relaxed);
            return Err(SubmitError::Full);
        }
        s.stats.submitted.fetch_add(1, Ordering::Relaxed);
        if let Some(t) = s.journaler.get() {
            t.unpark();
        }
        Ok(())
    }

    /// Submit and wait for the durable result.
    pub async fn execute(&self, command: Command) -> Result<Arc<Outcome>, ExecuteError> {
        self.execute_cancel(command, None).await
    }

    /// [`Submitter::execute`] for a cancel that named itself
    /// (`newClientOrderId` of a cancel request).
    pub async fn execute_cancel(
        &self,
        command: Command,
        cancel_client_id: Option<ClientOrderId>,
    ) -> Result<Arc<Outcome>, ExecuteError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let started = std::time::Instant::now();
        self.submit(Submission {
            command,
            reply: Some(tx),
            cancel_client_id,
        })
        .map_err(ExecuteError::Submit)?;
        match rx.await {
            Ok(Ok(o)) => {
                self.shared
                    .stats
                    .ack_time
                    .record(started.elapsed().as_micros() as u64);
                Ok(o)
            }
            Ok(Err(e)) => Err(ExecuteError::Pipeline(e)),
            Err(_) => Err(ExecuteError::Pipeline(PipelineError::ShuttingDown)),
        }
    }

    pub fn stats(&self) -> &PipelineStats {
        &self.shared.stats
    }
    pub fn queued(&self) -> usize {
        self.shared.ring.len()
    }
    pub fn is_poisoned(&self) -> bool {
        self.shared.poisoned.load(Ordering::Acquire)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecuteError {
    #[error(transparent)]
    Submit(SubmitError),
    #[error(transparent)]
    Pipeline(PipelineError),
}

/// A bounded single-producer, single-consumer hand-off between two
/// pipeline threads that blocks at once instead of spinning. Crossbeam's
/// blocking `recv` first spins and then calls `sched_yield` up to ten
/// times; with more busy threads than the two cores this pipeline targets,
/// every yield is a context switch to another runnable thread, paid once
/// per group commit on each hop. Here an idle receiver sleeps on a condition
/// variable and the sender wakes it. Each side notes under the lock that it
/// is about to sleep, and the other side calls `notify_one` only then: std's
/// condition variable makes a futex system call on every notify, waiter or
/// not. (Closing either end always notifies: that happens once.)
struct Handoff<T> {
    state: std::sync::Mutex<HandoffState<T>>,
    not_empty: std::sync::Condvar,
    not_full: std::sync::Condvar,
    capacity: usize,
}

struct HandoffState<T> {
    queue: std::collections::VecDeque<T>,
    /// The sender is gone: the receiver drains what is queued, then stops.
    closed: bool,
    /// The receiver is gone: sends fail.
    abandoned: bool,
    /// The receiver sleeps on `not_empty` (set and cleared under the lock).
    rx_waiting: bool,
    /// The sender sleeps on `not_full`.
    tx_waiting: bool,
}

struct HandoffTx<T>(Arc<Handoff<T>>);
struct HandoffRx<T>(Arc<Handoff<T>>);

fn handoff<T>(capacity: usize) -> (HandoffTx<T>, HandoffRx<T>) {
    let h = Arc::new(Handoff {
        state: std::sync::Mutex::new(HandoffState {
            queue: std::collections::VecDeque::with_capacity(capacity),
            closed: false,
            abandoned: false,
            rx_waiting: false,
            tx_waiting: false,
        }),
        not_empty: std::sync::Condvar::new(),
        not_full: std::sync::Condvar::new(),
        capacity: capacity.max(1),
    });
    (HandoffTx(h.clone()), HandoffRx(h))
}

impl<T> HandoffTx<T> {
    /// Queue `v`, waiting while the queue is full (back-pressure). `Err`
    /// when the receiver is gone.
    fn send(&self, v: T) -> Result<(), T> {
        let h = &self.0;
        let mut st = h.state.lock().unwrap_or_else(|p| p.into_inner());
        while st.queue.len() >= h.capacity && !st.abandoned {
            st.tx_waiting = true;
            st = h.not_full.wait(st).unwrap_or_else(|p| p.into_inner());
            st.tx_waiting = false;
        }
        if st.abandoned {
            return Err(v);
        }
        st.queue.push_back(v);
        let wake = st.rx_waiting;
        drop(st);
        if wake {
            h.not_empty.notify_one();
        }
        Ok(())
    }
}

impl<T> Drop for HandoffTx<T> {
    fn drop(&mut self) {
        let h = &self.0;
        h.state.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        h.not_empty.notify_one();
    }
}

impl<T> HandoffRx<T> {
    /// The next item, waiting for one; `None` once the sender is gone and
    /// the queue is drained.
    fn recv(&self) -> Option<T> {
        let h = &self.0;
        let mut st = h.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(v) = st.queue.pop_front() {
                let wake = st.tx_waiting;
                drop(st);
                if wake {
                    h.not_full.notify_one();
                }
                return Some(v);
            }
            if st.closed {
                return None;
            }
            st.rx_waiting = true;
            st = h.not_empty.wait(st).unwrap_or_else(|p| p.into_inner());
            st.rx_waiting = false;
        }
    }
}

impl<T> Drop for HandoffRx<T> {
    fn drop(&mut self) {
        let h = &self.0;
        h.state.lock().unwrap_or_else(|p| p.into_inner()).abandoned = true;
        h.not_full.notify_one();
    }
}

/// The running pipeline.
pub struct Pipeline {
    shared: Arc<Shared>,
    journaler: Option<JoinHandle<journal::Writer>>,
    engine: Option<JoinHandle<Engine>>,
    durable: journal::DurableSeq,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("durable", &self.durable.get())
            .finish()
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A group commit at least this long is a disk stall worth a warning:
/// every command of the batch (and those queued behind it) waited that long
/// for its acknowledgement.
const STALL_WARN_US: u64 = 100_000;

/// Warns about journal commits that stalled, at most once a second (the
/// ones in between are counted into the next warning), so a disk that
/// stays slow cannot flood the log.
#[derive(Default)]
struct StallLog {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl StallLog {
    /// Returns whether this commit was logged (for the tests).
    fn commit(&mut self, commit_us: u64, records: u64, now: std::time::Instant) -> bool {
        if commit_us < STALL_WARN_US {
            return false;
        }
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return false;
        }
        tracing::warn!(
            commit_ms = commit_us / 1000,
            records,
            earlier_stalls_not_logged = self.suppressed,
            "a journal group commit (write + fdatasync) took {} ms: the disk stalled and these commands' acknowledgements waited as long; if this repeats, move journal.dir to a faster, dedicated disk (mx_journal_commit_seconds shows how often)",
            commit_us / 1000
        );
        self.last = Some(now);
        self.suppressed = 0;
        true
    }
}

fn idle_wait(wait: WaitStrategy, idle_rounds: &mut u32) {
    *idle_rounds += 1;
    match wait {
        WaitStrategy::Spin => std::hint::spin_loop(),
        // No `sched_yield` phase: on a machine with more busy threads than
        // cores every yield is a context switch; a submitter unparks this
        // thread anyway.
        WaitStrategy::Park => {
            if *idle_rounds < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::park_timeout(Duration::from_millis(5));
            }
        }
    }
}

/// Nice value of background threads where the idle policy is refused.
pub const BACKGROUND_NICE: i32 = 10;

/// Room for a command's events before the engine applies it (W1 averages
/// 3.8 events per command; one fill of a place is about 8).
const EVENTS_HINT: usize = 8;

/// Make the calling thread (and the threads it starts later) a background
/// thread: Linux's `SCHED_IDLE` policy, so it runs on CPU time the order
/// path leaves over and never delays a gateway, journaler, engine or
/// publisher wake-up. It is not starved: the kernel gives idle-policy
/// threads a small weight, so they still progress on a saturated machine,
/// and fully whenever a core is free. Where the policy is refused (a
/// sandbox), the thread is niced to [`BACKGROUND_NICE`] instead. Best
/// effort: a failure is logged and the thread runs on as it was.
pub fn run_in_background() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sets the calling thread's policy (pid 0); `param` outlives
    // the call and the kernel only reads it.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "SCHED_IDLE refused for a background thread; lowering its nice value instead"
        );
        lower_thread_priority(BACKGROUND_NICE);
    }
}

/// Lower the calling thread's scheduling priority to `nice` (Linux
/// per-thread nice; raising it again would need privileges). Best effort:
/// a failure is logged and the thread runs on at its current priority.
fn lower_thread_priority(nice: i32) {
    // SAFETY: two plain syscalls about the calling thread; no memory of
    // ours is passed to the kernel.
    let rc = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice)
    };
    if rc != 0 {
        tracing::debug!(
            nice,
            error = %std::io::Error::last_os_error(),
            "could not lower a background thread's priority"
        );
    }
}

fn pin_to_core(core: usize) {
    if core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
        tracing::info!(core, "engine thread pinned");
    } else {
        tracing::warn!(
            core,
            "could not pin the engine thread to the requested core"
        );
    }
}

impl Pipeline {
    /// Start the journaler and engine threads. `engine` must already hold
    /// the recovered state matching `writer.last_seq()`. `publish` runs on
    /// the publisher thread for every applied command, in sequence order,
    /// before the command's reply is sent.
    pub fn start(
        writer: journal::Writer,
        engine: Engine,
        cfg: PipelineConfig,
        mut publish: impl FnMut(Arc<Outcome>) + Send + 'static,
    ) -> (Pipeline, Submitter) {
        assert_eq!(
            engine.last_seq(),
            writer.last_seq(),
            "engine state must match the journal before the pipeline starts"
        );
        let shared = Arc::new(Shared {
            ring: ArrayQueue::new(cfg.ring_capacity.max(1)),
            closed: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
            stats: PipelineStats::default(),
            journaler: std::sync::OnceLock::new(),
        });
        let durable = writer.durable_handle();
        let (batch_tx, batch_rx) = handoff::<Batch>(64);
        let (pub_tx, pub_rx) = handoff::<Vec<(Arc<Outcome>, Option<Reply>)>>(256);

        // The publisher answers each command after `publish` ran for it, so
        // a caller that gets its outcome can read its own write in every
        // read model without waiting on anything else (one wake-up per
        // request, instead of every waiter re-checking on every publish).
        // Answers leave in groups of up to ANSWER_GROUP commands, each
        // once the whole group is published: a connection then finds all
        // of its answers of the group ready at one wake-up and writes them
        // in one frame burst, instead of waking (and writing) again for
        // each answer published while it was already sending the first
        // ones. The bound keeps a large batch (after a stall) from holding
        // its first answers until its last command is published.
        const ANSWER_GROUP: usize = 64;
        let publisher = std::thread::Builder::new()
            .name("mx-publisher".into())
            .spawn(move || {
                while let Some(mut batch) = pub_rx.recv() {
                    for group in batch.chunks_mut(ANSWER_GROUP) {
                        for (o, _) in group.iter() {
                            publish(o.clone());
                        }
                        for (o, reply) in group.iter_mut() {
                            if let Some(r) = reply.take() {
                                let _ = r.send(Ok(o.clone()));
                            }
                        }
                    }
                }
            })
            .expect("spawn publisher thread");

        let engine_cfg = cfg.clone();
        let sh = shared.clone();
        let engine_thread = std::thread::Builder::new()
            .name("mx-engine".into())
            .spawn(move || {
                if let Some(core) = engine_cfg.engine_core {
                    pin_to_core(core);
                }
                let mut engine = engine;
                while let Some(batch) = batch_rx.recv() {
                    let mut published = Vec::with_capacity(batch.subs.len());
                    for (i, sub) in batch.subs.into_iter().enumerate() {
                        let seq = batch.first_seq + i as u64;
                        // The engine writes straight into the outcome's own
                        // vector: cloning a reused buffer copied every event
                        // field by field (13% of this thread at 60k orders/s).
                        // A place that rests or fills once emits fewer than
                        // EVENTS_HINT; bigger ones grow it.
                        let mut events = Vec::with_capacity(EVENTS_HINT);
                        engine.apply(seq, batch.ts_ms, &sub.command, &mut events);
                        let outcome = Arc::new(Outcome {
                            seq,
                            ts_ms: batch.ts_ms,
                            command: sub.command,
                            events,
                            cancel_client_id: sub.cancel_client_id,
                        });
                        published.push((outcome, sub.reply));
                    }
                    sh.stats
                        .applied
                        .fetch_add(published.len() as u64, Ordering::Relaxed);
                    // Bounded: a stalled publisher pushes back to the ring.
                    let _ = pub_tx.send(published);
                }
                drop(pub_tx);
                let _ = publisher.join();
                engine
            })
            .expect("spawn engine thread");

        let sh = shared.clone();
        let journaler = std::thread::Builder::new()
            .name("mx-journaler".into())
            .spawn(move || {
                let _ = sh.journaler.set(std::thread::current());
                let mut writer = writer;
                let mut buf = Vec::with_capacity(512);
                let mut last_ts_ns = 0u64;
                let mut idle = 0u32;
                let interval = cfg.commit_interval;
                // Set after a group commit of concurrent commands (several
                // in it, or more queued while it ran): the earliest start
                // of the next one.
                let mut next_commit: Option<std::time::Instant> = None;
                let mut stalls = StallLog::default();
                loop {
                    // Commands that queued up during the previous commit
                    // wait until `commit_interval` after its start, and the
                    // commands arriving meanwhile join them: fewer, larger
                    // commits under load. A command that finds the journal
                    // idle goes at once.
                    if let Some(due) = next_commit {
                        if !sh.ring.is_empty() {
                            next_commit = None;
                            let now = std::time::Instant::now();
                            if now < due {
                                std::thread::sleep(due - now);
                                sh.stats.delayed_commits.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    let mut subs = Vec::new();
                    while subs.len() < cfg.max_batch {
                        match sh.ring.pop() {
                            Some(s) => subs.push(s),
                            None => break,
                        }
                    }
                    if subs.is_empty() {
                        if sh.closed.load(Ordering::Acquire) && sh.ring.is_empty() {
                            break;
                        }
                        idle_wait(cfg.wait, &mut idle);
                        continue;
                    }
                    idle = 0;
                    let ts_ns = now_ns().max(last_ts_ns);
                    last_ts_ns = ts_ns;
                    let first_seq = writer.last_seq() + 1;
                    let started = std::time::Instant::now();
                    let mut failure = None;
                    for s in &subs {
                        buf.clear();
                        s.command.encode_into(&mut buf);
                        if let Err(e) = writer.append(ts_ns, &buf) {
                            failure = Some(e.to_string());
                            break;
                        }
                    }
                    if failure.is_none() {
                        if let Err(e) = writer.commit_batch() {
                            failure = Some(e.to_string());
                        }
                    }
                    if let Some(err) = failure {
                        tracing::error!(error = %err, "journal append/commit failed: refusing every command from now on; restart after fixing the disk");
                        sh.poisoned.store(true, Ordering::Release);
                        let e = PipelineError::JournalFailed(err);
                        for s in subs {
                            if let Some(r) = s.reply {
                                let _ = r.send(Err(e.clone()));
                            }
                        }
                        while let Some(s) = sh.ring.pop() {
                            if let Some(r) = s.reply {
                                let _ = r.send(Err(e.clone()));
                            }
                        }
                        break;
                    }
                    // Several commands in this batch, or some queued
                    // during its commit: clients submit concurrently, and
                    // the next commit gathers what comes within the
                    // interval (unless a full batch waits already: waiting
                    // would not make it larger). One command at a time is
                    // a lone client waiting for each answer: never delayed.
                    let queued = sh.ring.len();
                    if !interval.is_zero()
                        && (subs.len() > 1 || queued > 0)
                        && queued < cfg.max_batch
                    {
                        next_commit = Some(started + interval);
                    }
                    let n = subs.len() as u64;
                    sh.stats.batches.fetch_add(1, Ordering::Relaxed);
                    sh.stats.journaled.fetch_add(n, Ordering::Relaxed);
                    sh.stats.last_batch_size.store(n, Ordering::Relaxed);
                    let done = std::time::Instant::now();
                    let commit_us = done.duration_since(started).as_micros() as u64;
                    sh.stats.last_commit_us.store(commit_us, Ordering::Relaxed);
                    sh.stats.commit_time.record(commit_us);
                    stalls.commit(commit_us, n, done);
                    if batch_tx
                        .send(Batch {
                            first_seq,
                            ts_ms: ts_ns / 1_000_000,
                            subs,
                        })
                        .is_err()
                    {
                        break;
                    }
                    // The periodic watermark fsync, after the batch is on
                    // its way to the engine rather than before.
                    writer.store_watermark_if_due();
                }
                writer
            })
            .expect("spawn journaler thread");

        let pipeline = Pipeline {
            shared: shared.clone(),
            journaler: Some(journaler),
            engine: Some(engine_thread),
            durable,
        };
        (pipeline, Submitter { shared })
    }

    pub fn durable_seq(&self) -> u64 {
        self.durable.get()
    }

    pub fn durable_handle(&self) -> journal::DurableSeq {
        self.durable.clone()
    }

    /// Stop accepting, drain the ring, make everything durable and applied;
    /// returns the final engine state and the (still open) journal writer.
    pub fn shutdown(mut self) -> (Engine, journal::Writer) {
        self.shared.closed.store(true, Ordering::Release);
        let j = self.journaler.take().expect("journaler running");
        j.thread().unpark();
        let writer = j.join().expect("journaler thread panicked");
        let engine = self
            .engine
            .take()
            .expect("engine running")
            .join()
            .expect("engine thread panicked");
        (engine, writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::*;
    use std::sync::Mutex;

    #[test]
    fn disk_stalls_are_logged_at_most_once_a_second() {
        let t0 = std::time::Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut log = StallLog::default();
        assert!(!log.commit(STALL_WARN_US - 1, 10, at(0)), "not a stall");
        assert!(log.commit(STALL_WARN_US, 10, at(0)), "the first stall");
        assert!(!log.commit(250_000, 10, at(400)), "within the second");
        assert!(!log.commit(150_000, 10, at(999)));
        assert_eq!(log.suppressed, 2);
        assert!(log.commit(120_000, 10, at(1_000)), "a second later");
        assert_eq!(log.suppressed, 0, "counted into the warning");
        assert!(!log.commit(500, 10, at(5_000)));
        assert!(log.commit(400_000, 10, at(5_000)));
    }

    /// The calling thread's nice value, from /proc.
    fn own_nice() -> i64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // Fields after the parenthesised name; nice is field 19 overall.
        let after = stat.rsplit_once(')').unwrap().1;
        after.split_whitespace().nth(16).unwrap().parse().unwrap()
    }

    /// Hands `n` items through a handoff of `capacity` between two threads
    /// that each pause now and then (so both the empty and the full wait
    /// happen many times), within `limit`: a lost wake-up shows as a hang.
    fn handoff_round_trip(n: u64, capacity: usize, limit: Duration) -> Vec<u64> {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (tx, rx) = handoff::<u64>(capacity);
            let producer = std::thread::spawn(move || {
                for i in 0..n {
                    tx.send(i).unwrap();
                    if i % 997 == 0 {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
                // Dropping `tx` closes the handoff: recv drains, then None.
            });
            let mut got = Vec::with_capacity(n as usize);
            while let Some(v) = rx.recv() {
                if v % 1_009 == 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
                got.push(v);
            }
            producer.join().unwrap();
            let _ = done_tx.send(got);
        });
        done_rx
            .recv_timeout(limit)
            .expect("handoff stalled: a wake-up was lost")
    }

    #[test]
    fn handoff_delivers_everything_in_order_and_never_loses_a_wake_up() {
        for capacity in [1, 4, 64] {
            let got = handoff_round_trip(200_000, capacity, Duration::from_secs(60));
            assert_eq!(got.len(), 200_000, "capacity {capacity}");
            assert!(got.iter().enumerate().all(|(i, v)| *v == i as u64));
        }
    }

    #[test]
    fn handoff_send_fails_once_the_receiver_is_gone() {
        let (tx, rx) = handoff::<u32>(2);
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        // Full: a sender blocked on it is released when the receiver goes.
        let blocked = std::thread::spawn(move || {
            let r = tx.send(3);
            (r, tx)
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !blocked.is_finished(),
            "a send into a full handoff must wait"
        );
        drop(rx);
        let (r, tx) = blocked.join().unwrap();
        assert_eq!(r, Err(3));
        assert_eq!(tx.send(4), Err(4));
    }

    /// The calling thread's scheduling policy.
    fn own_policy() -> i32 {
        // SAFETY: reads the calling thread's policy; no memory involved.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[test]
    fn a_background_thread_runs_under_the_idle_policy() {
        let before = own_policy();
        let (policy, child) = std::thread::spawn(|| {
            run_in_background();
            let child = std::thread::spawn(own_policy).join().unwrap();
            (own_policy(), child)
        })
        .join()
        .unwrap();
        // Per thread: the caller is SCHED_IDLE, a thread it starts later
        // inherits it, the test's own thread keeps its policy.
        assert_eq!(policy, libc::SCHED_IDLE);
        assert_eq!(child, libc::SCHED_IDLE);
        assert_eq!(own_policy(), before);
        assert_ne!(before, libc::SCHED_IDLE);
    }

    #[test]
    fn lowering_the_nice_value_is_per_thread() {
        let (before, after, other) = std::thread::spawn(|| {
            let before = own_nice();
            lower_thread_priority(BACKGROUND_NICE);
            let after = own_nice();
            let other = std::thread::spawn(own_nice).join().unwrap();
            (before, after, other)
        })
        .join()
        .unwrap();
        // The caller is at BACKGROUND_NICE (or was already nicer), a
        // thread it starts later inherits it, the test's own thread is
        // untouched.
        assert_eq!(after, before.max(i64::from(BACKGROUND_NICE)));
        assert_eq!(other, after);
        assert_eq!(own_nice(), before);
    }

    fn open(dir: &std::path::Path) -> journal::Writer {
        journal::Writer::open(journal::JournalConfig::new(dir))
            .unwrap()
            .0
    }

    #[test]
    fn commit_times_land_in_their_bucket() {
        let h = LatencyHistogram::default();
        // A bound is inclusive (Prometheus `le`); past the last, +Inf.
        for us in [0, 50, 51, 100, 1_000, 250_000, 250_001, u64::MAX / 4] {
            h.record(us);
        }
        let c = h.cumulative();
        assert_eq!(c[0], 2, "0 and 50 us are <= 50 us");
        assert_eq!(c[1], 4, "51 and 100 us are <= 100 us");
        assert_eq!(c[4], 5, "1 ms");
        assert_eq!(c[11], 6, "250 ms");
        assert_eq!(c[12], 8, "+Inf counts everything");
        assert_eq!(
            h.sum_us(),
            50 + 51 + 100 + 1_000 + 250_000 + 250_001 + u64::MAX / 4
        );
    }

    fn create_user(i: u64) -> Command {
        Command::CreateUser {
            username: format!("pipe{i}"),
            email: String::new(),
            password_hash: String::new(),
            roles: roles::TRADER,
        }
    }

    fn queue(
        sub: &Submitter,
        cmd: Command,
    ) -> tokio::sync::oneshot::Receiver<Result<Arc<Outcome>, PipelineError>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        sub.submit(Submission {
            command: cmd,
            reply: Some(tx),
            cancel_client_id: None,
        })
        .unwrap();
        rx
    }

    /// A pipeline over a fresh journal in `dir` with `interval` between
    /// group commits.
    fn with_commit_interval(dir: &std::path::Path, interval: Duration) -> (Pipeline, Submitter) {
        Pipeline::start(
            open(dir),
            Engine::new(),
            PipelineConfig {
                commit_interval: interval,
                ..PipelineConfig::default()
            },
            |_| {},
        )
    }

    /// Ten commands queued at once (concurrent clients) and five more
    /// 50 ms later: the commit after the first one waits until
    /// `commit_interval` (1 s) after its start, so the late five join the
    /// rest in it. Whichever share of the ten the first commit takes, it
    /// either held several or left some queued: at most three commits
    /// (two when the journaler took more than one at first).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commands_queued_together_share_the_next_commit() {
        let tmp = tempfile::tempdir().unwrap();
        let (pipeline, sub) = with_commit_interval(tmp.path(), Duration::from_secs(1));
        let mut replies: Vec<_> = (0..10u64).map(|i| queue(&sub, create_user(i))).collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        replies.extend((10..15u64).map(|i| queue(&sub, create_user(i))));
        for r in replies {
            let o = r.await.unwrap().unwrap();
            assert!(pipeline.durable_seq() >= o.seq);
        }
        let stats = sub.stats();
        let (batches, delayed) = (
            stats.batches.load(Ordering::Relaxed),
            stats.delayed_commits.load(Ordering::Relaxed),
        );
        assert!(delayed >= 1, "no commit waited ({batches} commits)");
        assert!(batches <= 3, "15 commands took {batches} commits");
        assert_eq!(stats.journaled.load(Ordering::Relaxed), 15);
        let (engine, writer) = pipeline.shutdown();
        assert_eq!(engine.last_seq(), 15);
        writer.close().unwrap();
    }

    /// A lone client (each command submitted after the previous answer)
    /// never waits for the interval, however long it is.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_client_is_never_delayed_by_the_commit_interval() {
        let tmp = tempfile::tempdir().unwrap();
        let (pipeline, sub) = with_commit_interval(tmp.path(), Duration::from_secs(1));
        for i in 0..5u64 {
            let o = sub.execute(create_user(i)).await.unwrap();
            assert_eq!(o.seq, i + 1);
        }
        assert_eq!(sub.stats().batches.load(Ordering::Relaxed), 5);
        assert_eq!(sub.stats().delayed_commits.load(Ordering::Relaxed), 0);
        let (engine, writer) = pipeline.shutdown();
        assert_eq!(engine.last_seq(), 5);
        writer.close().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commands_are_journaled_applied_and_answered_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let published = Arc::new(Mutex::new(Vec::new()));
        let p2 = published.clone();
        let (pipeline, sub) = Pipeline::start(
            open(tmp.path()),
            Engine::new(),
            PipelineConfig::default(),
            move |o| p2.lock().unwrap().push(o.seq),
        );
        let mut tasks = Vec::new();
        for i in 0..200u64 {
            let sub = sub.clone();
            let published = published.clone();
            tasks.push(tokio::spawn(async move {
                let o = sub.execute(create_user(i)).await;
                // Read-your-writes: a command is published (every read
                // model applied it) before its answer arrives.
                let seen = o
                    .as_ref()
                    .map_or(true, |o| published.lock().unwrap().contains(&o.seq));
                (o, seen)
            }));
        }
        let mut seqs = Vec::new();
        for t in tasks {
            let (o, published_first) = t.await.unwrap();
            let o = o.unwrap();
            assert!(published_first, "seq {} answered before published", o.seq);
            assert!(matches!(o.events[0], Event::UserCreated { .. }));
            // Durable before answered.
            assert!(pipeline.durable_seq() >= o.seq);
            seqs.push(o.seq);
        }
        seqs.sort();
        assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
        // Duplicate username: rejected as data, still journaled.
        let o = sub.execute(create_user(5)).await.unwrap();
        assert!(matches!(o.events[..], [Event::Rejected { .. }]));
        let (engine, writer) = pipeline.shutdown();
        assert_eq!(engine.last_seq(), 201);
        assert_eq!(writer.durable_seq(), 201);
        writer.close().unwrap();
        assert_eq!(*published.lock().unwrap(), (1..=201).collect::<Vec<_>>());
        // A fresh replay of the journal gives the same state.
        let mut replica = Engine::new();
        persister::replica::replay(
            &mut replica,
            tmp.path(),
            u64::MAX,
            None,
            |_, _, _, _| {},
            |_| {},
        )
        .unwrap();
        assert_eq!(replica.state_hash(), engine.state_hash());
        // After shutdown nothing is accepted.
        assert_eq!(
            sub.submit(Submission {
                command: create_user(999),
                reply: None,
                cancel_client_id: None,
            }),
            Err(SubmitError::Closed)
        );
    }

    #[test]
    fn a_full_ring_is_refused_at_once() {
        let tmp = tempfile::tempdir().unwrap();
        // Publisher blocked: the engine stalls, then the journaler, then the ring fills.
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let g2 = gate.clone();
        let (pipeline, sub) = Pipeline::start(
            open(tmp.path()),
            Engine::new(),
            PipelineConfig {
                ring_capacity: 8,
                max_batch: 1,
                ..PipelineConfig::default()
            },
            move |_| drop(g2.lock().unwrap()),
        );
        let mut full = 0;
        for i in 0..10_000u64 {
            if sub.submit(Submission {
                command: create_user(i),
                reply: None,
                cancel_client_id: None,
            }) == Err(SubmitError::Full)
            {
                full += 1;
            }
        }
        assert!(full > 0, "a stalled pipeline never refused");
        assert!(sub.stats().rejected_full.load(Ordering::Relaxed) == full);
        drop(held);
        let (engine, writer) = pipeline.shutdown();
        assert_eq!(engine.last_seq(), writer.last_seq());
        assert_eq!(engine.last_seq(), 10_000 - full);
    }
}
