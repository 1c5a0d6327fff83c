//! SIP over TCP (RFC 3261 18.3): a reader per connection frames messages by Content-Length and
//! hands them to the proxy task; a writer per connection sends what the proxy answers. A
//! connection that sends garbage, a lying or missing Content-Length, or nothing for too long is
//! closed (after a 400 when the broken request can still be answered).
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tracing::debug;

use super::{Event, build, intake::Intake};
use crate::{
    media::session::Side,
    sip::{
        framing::{self, StreamFrame},
        inbound::{self, Inbound},
    },
};

/// A connection silent this long is closed (clients keep theirs alive with CRLF pings).
const IDLE: Duration = Duration::from_secs(300);

pub async fn listen(
    address: SocketAddr,
    side: Side,
    events: mpsc::UnboundedSender<Event>,
    intake: Arc<Intake>,
    numbers: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("binding SIP listener {address} (TCP)"))?;
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, from)) => {
                    let connection = numbers.fetch_add(1, Ordering::Relaxed);
                    let (events, intake) = (events.clone(), Arc::clone(&intake));
                    tokio::spawn(serve(stream, from, side, connection, events, intake));
                }
                Err(e) => debug!("accepting a SIP connection failed: {e}"),
            }
        }
    });
    Ok(())
}

async fn serve(
    stream: TcpStream,
    from: SocketAddr,
    listener: Side,
    connection: u64,
    events: mpsc::UnboundedSender<Event>,
    intake: Arc<Intake>,
) {
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    if events
        .send(Event::Connected {
            connection,
            writer: tx.clone(),
        })
        .is_err()
    {
        return;
    }
    let writing = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    });
    let mut buffer = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    'read: loop {
        let read = match tokio::time::timeout(IDLE, reader.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(read)) => read,
        };
        buffer.extend_from_slice(&chunk[..read]);
        loop {
            match framing::stream(&buffer) {
                Ok(StreamFrame::Incomplete) => break,
                Ok(StreamFrame::KeepAlive { len, ping }) => {
                    buffer.drain(..len);
                    if ping {
                        // RFC 5626: a double-CRLF ping is answered with a single CRLF.
                        let _ = tx.send(b"\r\n".to_vec());
                    }
                }
                Ok(StreamFrame::Message(len)) => {
                    let bytes: Vec<u8> = buffer.drain(..len).collect();
                    let event = Event::Stream {
                        listener,
                        from,
                        connection,
                        bytes,
                        received: Instant::now(),
                    };
                    if !intake.queue_stream(&events, event).await {
                        break 'read;
                    }
                }
                Err(error) => {
                    debug!(%from, "closing SIP connection: {error}");
                    if let Inbound::Refuse {
                        rejection,
                        message: Some(message),
                    } = inbound::framing_failure(&buffer, &error)
                    {
                        let reason = format!(
                            "{} ({})",
                            build::reason_phrase(rejection.status),
                            rejection.reason
                        );
                        let _ = tx.send(build::response(
                            &message,
                            rejection.status,
                            &reason,
                            "framing",
                            &[],
                        ));
                    }
                    break 'read;
                }
            }
        }
    }
    drop(tx);
    let _ = events.send(Event::Disconnected { connection });
    let _ = writing.await;
}
