//! Criterion micro-benchmarks of the engine: batches of W1 and W3 commands
//! applied to a fresh clone of the workload's start state, reported per
//! command (throughput in elements = commands).

use benches::{w3, workload};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use engine::Event;

fn apply_all(w: &workload::Workload, e: &mut engine::Engine, out: &mut Vec<Event>) -> usize {
    let mut events = 0;
    for (i, c) in w.commands.iter().enumerate() {
        out.clear();
        e.apply(w.first_seq + i as u64, w.first_ts + i as u64, c, out);
        events += out.len();
    }
    events
}

fn bench_engine(c: &mut Criterion) {
    const N: usize = 20_000;
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(N as u64));
    let w1 = workload::w1(42, N);
    g.bench_function("W1_apply_20k", |b| {
        let mut out = Vec::with_capacity(4096);
        b.iter_batched_ref(
            || w1.base.clone(),
            |e| apply_all(&w1, e, &mut out),
            BatchSize::LargeInput,
        )
    });
    let ops = w3::generate(42, N);
    let w3w = workload::w3_commands(&ops);
    g.bench_function("W3_apply_20k", |b| {
        let mut out = Vec::with_capacity(4096);
        b.iter_batched_ref(
            || w3w.base.clone(),
            |e| apply_all(&w3w, e, &mut out),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn bench_codec(c: &mut Criterion) {
    let w1 = workload::w1(7, 1_000);
    let mut g = c.benchmark_group("command_codec");
    g.throughput(Throughput::Elements(w1.commands.len() as u64));
    let mut buf = Vec::with_capacity(256);
    g.bench_function("encode_1k", |b| {
        b.iter(|| {
            let mut n = 0;
            for cmd in &w1.commands {
                buf.clear();
                cmd.encode_into(&mut buf);
                n += buf.len();
            }
            n
        })
    });
    let encoded: Vec<Vec<u8>> = w1.commands.iter().map(|c| c.encode()).collect();
    g.bench_function("decode_1k", |b| {
        b.iter(|| {
            encoded
                .iter()
                .map(|b| engine::Command::decode(b).is_ok() as usize)
                .sum::<usize>()
        })
    });
    g.finish();
}

criterion_group!(benches, bench_engine, bench_codec);
criterion_main!(benches);
