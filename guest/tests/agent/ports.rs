//! `connect_port`: a TCP connection inside the guest relayed over a request stream.

use crate::common::{TestAgent, fails, within};
use platinum_protocol::{GuestErrorCode, GuestEvent, GuestMessage, Inbound, Request, channel};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn relays_both_directions_and_half_closes() {
    let agent = TestAgent::start();
    let mux = agent.connect().await;
    // A service "inside the guest": the test agent runs on this host, so loopback is shared.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let service = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        s.write_all(b"reply:").await.unwrap();
        s.write_all(&got).await.unwrap();
        s.shutdown().await.unwrap();
    });
    let stream = mux.open_json(&Request::ConnectPort { port }).unwrap();
    let (tx, mut rx) = stream.split();
    let first = within("connected", rx.recv_json::<GuestMessage>())
        .await
        .unwrap();
    assert_eq!(first, GuestMessage::Event(GuestEvent::Connected));
    let payload = vec![42u8; 300_000];
    tx.send_data(channel::STDIN, &payload).await.unwrap();
    tx.send_eof(channel::STDIN).unwrap();
    let mut back = Vec::new();
    within("relay", async {
        loop {
            match rx.recv().await.unwrap() {
                Some(Inbound::Data { bytes, .. }) => back.extend_from_slice(&bytes),
                Some(Inbound::Eof { .. }) => {}
                Some(Inbound::Msg(m)) => {
                    let done: GuestMessage = serde_json::from_slice(&m).unwrap();
                    assert!(
                        matches!(
                            done,
                            GuestMessage::Outcome(platinum_protocol::Outcome::Ok(_))
                        ),
                        "{done:?}"
                    );
                }
                None => break,
            }
        }
    })
    .await;
    service.await.unwrap();
    assert_eq!(&back[..6], b"reply:");
    assert_eq!(back.len(), 6 + payload.len());
}

#[tokio::test]
async fn a_closed_port_is_a_typed_error() {
    let agent = TestAgent::start();
    let mux = agent.connect().await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = fails(&mux, &Request::ConnectPort { port }).await;
    assert_eq!(err.code, GuestErrorCode::ConnectionRefused, "{err:?}");
}
