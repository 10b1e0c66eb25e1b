//! Criterion micro-benchmarks of the WebSocket API's request decoding: the
//! `order.place` frame `mx-bench ws` sends (W4), read into its id, method
//! and sorted params ([`decode_fast`]), and then into signed [`Params`]
//! (the checks on names and values, the signing payload). The general
//! decoder (a `serde_json::Value` tree) is measured on the same frame for
//! comparison. Throughput in frame bytes.

use benches::rest_bench::Account;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gateway::binance::params::Params;
use gateway::binance::ws_frame::decode_fast;
use std::hint::black_box;

fn bench_decode(c: &mut Criterion) {
    let acct = Account::new("k".repeat(64), "s".repeat(64));
    let frame = benches::ws_bench::order_request(&acct, 123_456, true, 30_001, 1_764_259_200_000);
    let f = decode_fast(&frame, 64).expect("the W4 frame takes the fast path");
    assert_eq!(f.method, "order.place");
    assert!(Params::from_json(f.params).is_ok());

    let mut g = c.benchmark_group("ws_request");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("decode_fast", |b| {
        b.iter(|| decode_fast(black_box(&frame), 64))
    });
    g.bench_function("decode_fast_and_params", |b| {
        b.iter(|| {
            let f = decode_fast(black_box(&frame), 64).expect("decodes");
            Params::from_json(f.params)
        })
    });
    g.bench_function("serde_json_value", |b| {
        b.iter(|| serde_json::from_str::<serde_json::Value>(black_box(&frame)))
    });
    g.finish();
}

criterion_group!(benches, bench_decode);
criterion_main!(benches);
