//! https webhook delivery against a local TLS server (tokio-rustls) with a
//! self-signed certificate made here (rcgen):
//! * trusted through `http.webhook_extra_ca_file`: the notification
//!   arrives, the same request as over http, with SNI = the URL's host;
//! * not trusted (only the compiled-in roots), or trusted but for another
//!   name: the handshake fails, nothing is sent, and the delivery ends as
//!   failed (`deliver` returns false after its attempts, logged);
//! * the SSRF guard still refuses a private address for https;
//! * a missing or certificate-less extra CA file is a configuration error.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use gateway::notifications::{deliver, tls, Delivery, WebhookConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// What the server saw of one connection.
#[derive(Debug)]
enum Seen {
    /// SNI (None for an IP literal) and the raw request.
    Request(Option<String>, String),
    HandshakeFailed(String),
}

/// The address `localhost` resolves to first (what the client connects to).
async fn localhost() -> std::net::IpAddr {
    tokio::net::lookup_host(("localhost", 0))
        .await
        .unwrap()
        .next()
        .unwrap()
        .ip()
}

/// A TLS server presenting `cert` on `ip`, answering 200 to each request.
async fn tls_server(
    ck: &rcgen::CertifiedKey,
    ip: std::net::IpAddr,
) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()));
    let cfg =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![ck.cert.der().clone()], key)
            .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let mut s = match acceptor.accept(tcp).await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Seen::HandshakeFailed(e.to_string()));
                        return;
                    }
                };
                let sni = s.get_ref().1.server_name().map(str::to_owned);
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Headers, then Content-Length bytes of body.
                loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
                let _ = s.shutdown().await;
                let _ = tx.send(Seen::Request(
                    sni,
                    String::from_utf8_lossy(&buf).into_owned(),
                ));
            });
        }
    });
    (addr, rx)
}

fn config(tls: Arc<rustls::ClientConfig>, allow_private: bool) -> WebhookConfig {
    WebhookConfig {
        allow_private,
        timeout: Duration::from_secs(5),
        max_attempts: 2,
        tls,
    }
}

fn pem_file(dir: &Path, ck: &rcgen::CertifiedKey) -> std::path::PathBuf {
    let path = dir.join("ca.pem");
    std::fs::write(&path, ck.cert.pem()).unwrap();
    path
}

const BODY: &str = r#"{"id":7,"type":"IN_APP","title":"Deposit credited"}"#;

#[tokio::test]
async fn https_delivery_with_a_trusted_certificate() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (addr, mut seen) = tls_server(&ck, localhost().await).await;
    let tmp = tempfile::tempdir().unwrap();
    let tls = tls::client_config(Some(&pem_file(tmp.path(), &ck))).unwrap();
    let d = Delivery {
        url: format!("https://localhost:{}/hook/abc?token=x", addr.port()),
        body: BODY.to_owned(),
    };
    assert!(deliver(&d, &config(tls, true)).await);
    match seen.recv().await.unwrap() {
        Seen::Request(sni, req) => {
            assert_eq!(sni.as_deref(), Some("localhost"));
            assert!(
                req.starts_with("POST /hook/abc?token=x HTTP/1.1\r\n"),
                "{req}"
            );
            let lower = req.to_ascii_lowercase();
            assert!(
                lower.contains(&format!("\r\nhost: localhost:{}\r\n", addr.port())),
                "{req}"
            );
            assert!(
                lower.contains("\r\ncontent-type: application/json\r\n"),
                "{req}"
            );
            assert!(req.ends_with(&format!("\r\n\r\n{BODY}")), "{req}");
        }
        other => panic!("{other:?}"),
    }
    // Exactly one delivery: a 2xx is not retried.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), seen.recv())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn an_untrusted_certificate_fails_the_delivery_and_sends_nothing() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (addr, mut seen) = tls_server(&ck, localhost().await).await;
    let d = Delivery {
        url: format!("https://localhost:{}/hook", addr.port()),
        body: BODY.to_owned(),
    };
    // Only the compiled-in roots: the self-signed certificate is unknown.
    let cfg = config(tls::client_config(None).unwrap(), true);
    assert!(!deliver(&d, &cfg).await);
    // Every attempt (2) failed in the handshake; no request was sent.
    for _ in 0..2 {
        match seen.recv().await.unwrap() {
            // The client aborts with an alert naming the certificate.
            Seen::HandshakeFailed(e) => assert!(e.contains("alert"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    // Trusted, but the URL names another host (an IP literal the
    // certificate does not list): refused as well.
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(
        tls::client_config(Some(&pem_file(tmp.path(), &ck))).unwrap(),
        true,
    );
    let host = match addr {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    };
    let d = Delivery {
        url: format!("https://{host}:{}/hook", addr.port()),
        body: BODY.to_owned(),
    };
    assert!(!deliver(&d, &cfg).await);
    match seen.recv().await.unwrap() {
        Seen::HandshakeFailed(e) => assert!(e.contains("alert"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_ssrf_guard_applies_to_https() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (addr, mut seen) = tls_server(&ck, localhost().await).await;
    let tmp = tempfile::tempdir().unwrap();
    let tls = tls::client_config(Some(&pem_file(tmp.path(), &ck))).unwrap();
    let d = Delivery {
        url: format!("https://localhost:{}/hook", addr.port()),
        body: BODY.to_owned(),
    };
    // Private addresses not allowed: refused before connecting.
    assert!(!deliver(&d, &config(tls, false)).await);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), seen.recv())
            .await
            .is_err()
    );
}

#[test]
fn a_bad_extra_ca_file_is_a_configuration_error() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.pem");
    let e = tls::client_config(Some(&missing)).unwrap_err().to_string();
    assert!(e.starts_with("http.webhook_extra_ca_file "), "{e}");
    let empty = tmp.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let e = tls::client_config(Some(&empty)).unwrap_err().to_string();
    assert!(e.contains("no PEM certificate"), "{e}");
}
