//! The TLS server wrapper under arbitrary steps: [`Tls`]`<`[`Session`]`>`
//! fed garbage, plaintext PDUs and, when a step says so, the records of an
//! honest rustls client that shuttles bytes with it.

use std::io::{Read, Write};
use std::sync::Arc;

use bytes::BytesMut;
use rustls::ClientConnection;
use rustls::pki_types::ServerName;
use teamtalk_proto::PduCodec;

use super::{Checker, MAX_FRAME, MAX_TX, Step, addr, backpressure_step, check_session, pdu};
use crate::tls::testing::TestPki;
use crate::{Input, Login, Machine, Session, SessionConfig, Tls};

/// Most bytes one read hands the server: the runners' reads stay well
/// below [`check_session`]'s allowance for what a paused session holds
/// (the reactor reads up to 64 KiB and checks `wants_read` between
/// reads, as here).
const READ_CHUNK: usize = 512;

/// The honest peer: a rustls client, the records it wrote that the
/// server has not read yet (they wait in the kernel, for real), and the
/// plaintext it decrypted so far (checked to hold whole PDUs).
struct Peer {
    conn: ClientConnection,
    unread: Vec<u8>,
    rx: BytesMut,
    codec: PduCodec,
}

impl Peer {
    fn new() -> Self {
        let pki = TestPki::shared();
        let config = pki.client_config(pki, false);
        let name = ServerName::try_from("localhost").expect("name");
        Self {
            conn: ClientConnection::new(config, name).expect("client connection"),
            unread: Vec::new(),
            rx: BytesMut::new(),
            codec: PduCodec::new(MAX_FRAME),
        }
    }

    /// Takes what the server transmitted. Returns false when the client
    /// gave up (an alert, or bytes it cannot accept).
    fn receive(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            match self.conn.read_tls(&mut bytes) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
            let Ok(state) = self.conn.process_new_packets() else {
                return false;
            };
            let n = state.plaintext_bytes_to_read();
            let start = self.rx.len();
            self.rx.resize(start + n, 0);
            self.conn
                .reader()
                .read_exact(&mut self.rx[start..])
                .expect("announced plaintext");
        }
        // What the wrapper encrypts is whole transmits of the inner
        // session, so the decrypted stream never ends in a partial PDU.
        while let Some(p) = self.codec.decode(&mut self.rx).expect("valid frames") {
            assert!(p.wire_len() <= MAX_FRAME as usize);
        }
        assert!(self.rx.is_empty(), "decrypted stream ends in a partial PDU");
        true
    }

    /// The next read of the server: at most [`READ_CHUNK`] bytes of the
    /// client's records.
    fn read(&mut self) -> Vec<u8> {
        while self.conn.wants_write() {
            if self.conn.write_tls(&mut self.unread).unwrap_or(0) == 0 {
                break;
            }
        }
        let n = self.unread.len().min(READ_CHUNK);
        self.unread.drain(..n).collect()
    }
}

/// Runs `steps` against a client [`Session`] wrapped in a TLS server
/// [`Tls`], checking the contract after each (as [`run_session`]
/// does). Steps mean what they mean for a plain session, except:
/// - `Connected`: an honest rustls client starts a handshake; from then on
///   bytes flow between it and the server after every step, and what the
///   server transmits must decrypt to whole PDUs;
/// - `RecvPdu`: the PDU arrives encrypted by the honest client once its
///   handshake is done, in plaintext otherwise;
/// - `Recv`: raw bytes into the TLS stream (garbage, mostly).
///
/// [`run_session`]: super::run_session
pub fn run_tls_session(steps: &[Step]) {
    let _ = run_tls_session_login(steps);
}

/// [`run_tls_session`], returning whether the TLS handshake completed and
/// where the session's login ended (for checking the runner reaches the
/// interesting states).
fn run_tls_session_login(steps: &[Step]) -> (bool, Login) {
    let mut cfg = SessionConfig::client();
    cfg.max_frame_len = MAX_FRAME;
    cfg.max_tx_bytes = MAX_TX;
    let mut c = Checker::new();
    let server_config = TestPki::shared().server_config(false);
    let mut s = Tls::server(server_config, Session::new(cfg, addr(), c.now), c.now);
    let mut peer: Option<Peer> = None;
    drain_to(&mut c, &mut s, &mut peer);
    for step in steps {
        match step {
            Step::Connected => {
                if peer.is_none() {
                    peer = Some(Peer::new());
                }
            }
            Step::RecvPdu {
                kind,
                seq,
                body_len,
            } if peer.as_ref().is_some_and(|p| !p.conn.is_handshaking()) => {
                let bytes = pdu(*kind, *seq, usize::from(*body_len)).to_bytes();
                let p = peer.as_mut().expect("checked");
                p.conn.writer().write_all(&bytes).expect("client writer");
            }
            Step::Send(len) => {
                let _ = s.send(&pdu(2, 0, usize::from(*len)));
            }
            Step::AcceptLogin {
                user_id,
                client_type,
            } => {
                let _ = s.accept_login(*user_id, u32::from(*client_type));
            }
            Step::RejectLogin => {
                let _ = s.reject_login(&pdu(1, 0, 4));
            }
            Step::Close => s.close(),
            other => {
                if !backpressure_step(s.inner_mut(), c.now, other) {
                    c.feed(&mut s, other);
                }
            }
        }
        check_session(s.inner());
        drain_to(&mut c, &mut s, &mut peer);
        // Let the honest client and the server talk until both are quiet,
        // one bounded read at a time, as a driver reads.
        for _ in 0..64 {
            // A paused session's records stay with the client (in the
            // kernel, for real).
            if !s.wants_read() {
                break;
            }
            let Some(p) = peer.as_mut() else { break };
            let records = p.read();
            if records.is_empty() {
                break;
            }
            s.handle_input(Input::Received(c.now, &records));
            drain_to(&mut c, &mut s, &mut peer);
        }
        assert!(
            s.pending_len() <= MAX_TX + MAX_FRAME as usize,
            "plaintext waiting for the handshake over the send cap"
        );
    }
    (s.is_established(), s.login())
}

/// One drain; transmits go to the honest client, if any.
fn drain_to(c: &mut Checker, s: &mut Tls<Session>, peer: &mut Option<Peer>) {
    let mut wire = Vec::new();
    c.drain_with(s, |bytes, _| wire.extend_from_slice(bytes));
    if let Some(p) = peer.as_mut()
        && !wire.is_empty()
        && !p.receive(&wire)
    {
        *peer = None;
    }
}

/// Fuzz entry point: arbitrary bytes straight into a TLS server wrapper
/// around a client session, once whole and once split at every 7th byte
/// (records and handshake messages then arrive in pieces). Must never
/// panic and must keep the drain contract.
pub fn run_tls_server_bytes(data: &[u8]) {
    let server_config = TestPki::shared().server_config(false);
    for chunk in [data.len().max(1), 7] {
        let mut c = Checker::new();
        let session = Session::new(SessionConfig::client(), addr(), c.now);
        let mut s = Tls::server(Arc::clone(&server_config), session, c.now);
        c.drain_with(&mut s, |_, _| {});
        for piece in data.chunks(chunk) {
            s.handle_input(Input::Received(c.now, piece));
            c.drain_with(&mut s, |_, _| {});
            if c.finished {
                break;
            }
        }
        // Then the handshake deadline must close it.
        let later = c.advance(u16::MAX);
        s.handle_input(Input::Timeout(later));
        c.drain_with(&mut s, |_, _| {});
        assert!(
            c.finished,
            "a TLS server without a handshake outlived its deadline"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_honest_client_logs_in_through_the_wrapper() {
        let steps = [
            Step::Connected,
            Step::RecvPdu {
                kind: 1,
                seq: 1,
                body_len: 4,
            },
            Step::AcceptLogin {
                user_id: 9,
                client_type: 1,
            },
            Step::RecvPdu {
                kind: 0,
                seq: 2,
                body_len: 0,
            },
            Step::Send(300),
        ];
        let (established, login) = run_tls_session_login(&steps);
        assert!(established);
        assert_eq!(
            login,
            Login::LoggedIn {
                user_id: 9,
                client_type: 1
            }
        );
    }

    #[test]
    fn garbage_ends_the_handshake() {
        let steps = [Step::Connected, Step::Recv(vec![0; 40])];
        assert_eq!(run_tls_session_login(&steps), (false, Login::Awaiting));
    }
}
