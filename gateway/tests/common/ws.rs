//! A blocking WebSocket test client (a thread running tokio-tungstenite)
//! shared by the stream tests: connect to a path of a `serve` process, send
//! JSON, wait for replies or close frames with timeouts.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};

use super::{now_ms, Trader};
use gateway::binance::sign::hmac_sha256_hex;
use tokio_tungstenite::tungstenite::Message;

/// What a client thread saw.
#[derive(Debug)]
pub enum In {
    Json(Value),
    /// The connection ended: close code and reason if a close frame came.
    Closed(Option<(u16, String)>),
}

/// A WebSocket client on its own thread and runtime: requests go in,
/// everything received comes out in order.
pub struct Ws {
    pub out: tokio::sync::mpsc::UnboundedSender<Message>,
    rx: std::sync::mpsc::Receiver<In>,
}

impl Ws {
    pub fn connect(port: u16, path: &str) -> Ws {
        Ws::connect_with(port, path, None, true)
    }

    /// `recv_buf`: a small socket receive buffer; `reading`: false for a
    /// client that stops reading until `resume` is sent on `out`
    /// (a `Message::Frame`-free signal: an empty binary message).
    pub fn connect_with(port: u16, path: &str, recv_buf: Option<u32>, reading: bool) -> Ws {
        let url = format!("ws://127.0.0.1:{port}{path}");
        let (out, mut out_rx) = tokio::sync::mpsc::unbounded_channel::<Message>();
        let (tx, rx) = std::sync::mpsc::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let sock = tokio::net::TcpSocket::new_v4().unwrap();
                if let Some(n) = recv_buf {
                    sock.set_recv_buffer_size(n).unwrap();
                }
                let stream = sock
                    .connect(([127, 0, 0, 1], port).into())
                    .await
                    .unwrap();
                let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
                ready_tx.send(()).unwrap();
                let mut reading = reading;
                loop {
                    tokio::select! {
                        m = out_rx.recv() => match m {
                            // An empty binary message toggles reading on.
                            Some(Message::Binary(b)) if b.is_empty() => reading = true,
                            // A failed send (the server closed) shows up on
                            // the reading side with its close frame.
                            Some(m) => { let _ = ws.send(m).await; }
                            None => return,
                        },
                        m = ws.next(), if reading => match m {
                            Some(Ok(Message::Text(t))) => {
                                let v = serde_json::from_str(t.as_str()).unwrap();
                                if tx.send(In::Json(v)).is_err() { return; }
                            }
                            Some(Ok(Message::Close(f))) => {
                                let _ = tx.send(In::Closed(f.map(|f| (u16::from(f.code), f.reason.to_string()))));
                                return;
                            }
                            Some(Ok(_)) => {}
                            Some(Err(_)) | None => { let _ = tx.send(In::Closed(None)); return; }
                        },
                    }
                }
            });
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("websocket connect");
        Ws { out, rx }
    }

    pub fn send(&self, v: &Value) {
        self.send_text(&v.to_string());
    }

    pub fn send_text(&self, t: &str) {
        let _ = self.out.send(Message::Text(t.to_string().into()));
    }

    pub fn next(&self, timeout: Duration) -> Option<In> {
        self.rx.recv_timeout(timeout).ok()
    }

    pub fn json(&self) -> Value {
        match self.next(Duration::from_secs(10)) {
            Some(In::Json(v)) => v,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// The next message that is not a stream payload (a reply or an error).
    pub fn reply(&self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let v = self.json();
            if v.get("result").is_some() || v.get("code").is_some() {
                return v;
            }
        }
        panic!("no reply");
    }

    /// Waits for the end of the connection, skipping payloads.
    pub fn closed(&self, timeout: Duration) -> Option<(u16, String)> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.next(Duration::from_millis(200)) {
                Some(In::Closed(c)) => return c,
                _ => continue,
            }
        }
        panic!("connection was not closed");
    }

    /// Stream payloads received within `quiet` of each other, for at
    /// most 3 s (timer streams never go quiet).
    pub fn drain(&self, quiet: Duration) -> Vec<Value> {
        let end = Instant::now() + Duration::from_secs(3);
        let mut out = Vec::new();
        while Instant::now() < end {
            match self.next(quiet) {
                Some(In::Json(v)) => out.push(v),
                _ => break,
            }
        }
        out
    }
}

/// Sign `params` the way web-socket-api.md's examples do: add apiKey and
/// timestamp, sort by name, join `name=value` with `&` (strings as they
/// are, numbers as their JSON text), HMAC-SHA256 hex.
pub fn sign(t: &Trader, params: Value) -> Value {
    let mut p: Map<String, Value> = params.as_object().cloned().unwrap_or_default();
    p.insert("apiKey".into(), json!(t.key));
    if !p.contains_key("timestamp") {
        p.insert("timestamp".into(), json!(now_ms()));
    }
    let mut names: Vec<&String> = p.keys().collect();
    names.sort();
    let payload = names
        .iter()
        .map(|k| {
            let v = match &p[k.as_str()] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join("&");
    let sig = hmac_sha256_hex(t.secret.as_bytes(), payload.as_bytes());
    p.insert("signature".into(), json!(sig));
    Value::Object(p)
}
