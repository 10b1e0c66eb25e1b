//! Criterion micro-benchmarks of request signatures over a signed
//! `order.place` payload: the server's check (ring HMAC, key built once per
//! API key) against the same check with RustCrypto's keyed HMAC (the
//! server's code before ring: it uses SHA-NI where the CPU has it, portable
//! code otherwise), and signing as the tests' client helper does (RustCrypto,
//! key set up per call) and as the load generators do (cached ring key).
//! Throughput in payload bytes.

use benches::rest_bench::Account;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gateway::binance::sign::{hmac_sha256_hex, SigningKey};
use std::hint::black_box;

/// A WebSocket API `order.place` signing payload as mx-bench ws sends it
/// (194 bytes with a 64-character API key).
fn order_payload() -> String {
    format!(
        "apiKey={}&newOrderRespType=ACK&price=30001&quantity=0.001&side=BUY&symbol=BTCUSDT&timeInForce=GTC&timestamp=1764259200000&type=LIMIT",
        "k".repeat(64)
    )
}

fn bench_signatures(c: &mut Criterion) {
    let secret = "s".repeat(64);
    let payload = order_payload();
    let sig = hmac_sha256_hex(secret.as_bytes(), payload.as_bytes());
    let key = SigningKey::hmac(secret.as_bytes());
    assert!(key.verify(payload.as_bytes(), &sig).is_ok());
    let acct = Account::new("K".into(), secret.clone());
    assert_eq!(acct.sign(payload.as_bytes()), sig);

    let mut g = c.benchmark_group("signature");
    g.throughput(Throughput::Bytes(payload.len() as u64));
    g.bench_function("server_verify_hmac_ring_keyed", |b| {
        b.iter(|| key.verify(black_box(payload.as_bytes()), black_box(&sig)))
    });
    let keyed = <hmac::Hmac<sha2::Sha256> as hmac::KeyInit>::new_from_slice(secret.as_bytes())
        .expect("any key length");
    let tag: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&sig[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    g.bench_function("server_verify_hmac_rustcrypto_keyed", |b| {
        b.iter(|| {
            use hmac::Mac;
            let mut mac = keyed.clone();
            mac.update(black_box(payload.as_bytes()));
            mac.verify_slice(black_box(&tag))
        })
    });
    g.bench_function("client_sign_rustcrypto_per_call_key", |b| {
        b.iter(|| hmac_sha256_hex(black_box(secret.as_bytes()), black_box(payload.as_bytes())))
    });
    g.bench_function("client_sign_ring_cached_key", |b| {
        b.iter(|| acct.sign(black_box(payload.as_bytes())))
    });
    g.finish();
}

criterion_group!(benches, bench_signatures);
criterion_main!(benches);
