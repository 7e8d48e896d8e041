//! The byte stream under a connection: TCP, or one end of an in-process
//! socket pair ([`LocalNet`](crate::LocalNet)). The reactor treats both
//! alike; only connecting differs.

use std::io::{self, IoSlice, Read, Write};

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

use crate::socket::{self, ConnectState};

#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Local(UnixStream),
}

impl Stream {
    pub(crate) fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            Self::Tcp(s) => s.take_error(),
            Self::Local(s) => s.take_error(),
        }
    }

    /// How a connect under way stands (a local pair is connected from
    /// the start).
    pub(crate) fn connect_result(&self) -> ConnectState {
        match self {
            Self::Tcp(s) => socket::connect_result(s),
            Self::Local(s) => match s.take_error() {
                Ok(Some(e)) | Err(e) => ConnectState::Failed(e),
                Ok(None) => ConnectState::Connected,
            },
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.read(buf),
            Self::Local(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.write(buf),
            Self::Local(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.write_vectored(bufs),
            Self::Local(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for Stream {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.register(registry, token, interests),
            Self::Local(s) => s.register(registry, token, interests),
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.reregister(registry, token, interests),
            Self::Local(s) => s.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.deregister(registry),
            Self::Local(s) => s.deregister(registry),
        }
    }
}
