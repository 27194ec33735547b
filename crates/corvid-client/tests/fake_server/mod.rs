//! An in-process stand-in for a Corvid server: it speaks the wire protocol on
//! 127.0.0.1:0 and hands every connection to the test, which reads requests and writes
//! answers by hand (in any order, or not at all).

use bytes::BytesMut;
use corvid_core::Request;
use corvid_wire::{ClientHello, Frame, HelloStatus, ServerHello, HELLO_LEN, VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A listening fake server.
pub struct FakeServer {
    pub address: String,
    connections: mpsc::UnboundedReceiver<FakeConnection>,
    accept: JoinHandle<()>,
}

/// One accepted, handshaken connection. Dropping it closes the socket.
pub struct FakeConnection {
    requests: mpsc::UnboundedReceiver<(u32, Request)>,
    frames: Option<mpsc::UnboundedSender<Frame>>,
    tasks: Vec<JoinHandle<()>>,
}

impl FakeServer {
    pub async fn start() -> FakeServer {
        FakeServer::start_speaking(VERSION).await
    }

    /// A fake server whose newest protocol version is `newest`: it refuses a newer hello
    /// as such a server would, and hands only agreed connections to the test.
    pub async fn start_speaking(newest: u16) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("local address").to_string();
        let (found, connections) = mpsc::unbounded_channel();
        let accept = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut hello = [0u8; HELLO_LEN];
                if socket.read_exact(&mut hello).await.is_err() {
                    continue;
                }
                let Ok(hello) = ClientHello::decode(hello) else {
                    continue;
                };
                let answer = if (1..=newest).contains(&hello.version) {
                    ServerHello::answer(&hello)
                } else {
                    ServerHello {
                        version: newest,
                        status: HelloStatus::UnsupportedVersion,
                    }
                };
                if socket.write_all(&answer.encode()).await.is_err()
                    || answer.status != HelloStatus::Ok
                {
                    continue;
                }
                // Frames are written as the agreed version has them.
                let version = answer.version;
                let (mut reader, mut writer) = socket.into_split();
                let (request_sender, requests) = mpsc::unbounded_channel();
                let (frames, mut frame_queue) = mpsc::unbounded_channel::<Frame>();
                let read_task = tokio::spawn(async move {
                    let mut buffer = BytesMut::new();
                    loop {
                        while let Ok(Some(frame)) = corvid_wire::decode(&mut buffer, 1 << 20) {
                            if let Frame::Request { id, request } = frame {
                                let _ = request_sender.send((id, request));
                            }
                        }
                        match reader.read_buf(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                    }
                });
                let write_task = tokio::spawn(async move {
                    while let Some(frame) = frame_queue.recv().await {
                        let mut bytes = BytesMut::new();
                        corvid_wire::encode_version(&frame, &mut bytes, version).expect("encode");
                        if writer.write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                });
                let connection = FakeConnection {
                    requests,
                    frames: Some(frames),
                    tasks: vec![read_task, write_task],
                };
                if found.send(connection).is_err() {
                    return;
                }
            }
        });
        FakeServer {
            address,
            connections,
            accept,
        }
    }

    /// The next connection a client opens.
    pub async fn accept(&mut self) -> FakeConnection {
        self.connections
            .recv()
            .await
            .expect("the fake server stopped")
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl FakeConnection {
    /// The next request the client sent, with its id.
    pub async fn request(&mut self) -> (u32, Request) {
        self.requests
            .recv()
            .await
            .expect("the client closed the connection")
    }

    /// Writes a frame to the client.
    pub fn send(&self, frame: Frame) {
        if let Some(frames) = &self.frames {
            let _ = frames.send(frame);
        }
    }

    /// True once the client has closed its side.
    pub async fn closed_by_client(&mut self) -> bool {
        self.requests.recv().await.is_none()
    }
}

impl Drop for FakeConnection {
    fn drop(&mut self) {
        self.frames = None;
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// An address where nothing listens: bound once, then released.
pub async fn refusing_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("local address").to_string();
    drop(listener);
    address
}
