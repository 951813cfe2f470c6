//! A raw RESP connection to a test node: replies exactly as the node sent
//! them, and a close reported as such, for tests of the protocol itself.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use tessera::node::resp::{encode_command, Frame};

use crate::common::TestNode;

pub struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

/// Why no reply came.
#[derive(Debug)]
pub enum NoReply {
    /// The node closed the connection.
    Closed,
    /// A read or write failed (a reset, or the read timeout).
    Io(std::io::Error),
    /// Bytes that are not RESP.
    Invalid(String),
}

impl Raw {
    /// Connects to `node`; a read waits at most `timeout`.
    pub fn connect(node: &TestNode, timeout: Duration) -> Self {
        Self::connect_port(node.port, timeout)
    }

    /// Connects to any RESP server on the loopback (a reference redis-server).
    pub fn connect_port(port: u16, timeout: Duration) -> Self {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(timeout)).expect("set timeout");
        Self { s, buf: Vec::new() }
    }

    pub fn try_send(&mut self, args: &[&[u8]]) -> Result<(), NoReply> {
        let mut out = Vec::new();
        encode_command(args, &mut out);
        self.s.write_all(&out).map_err(NoReply::Io)
    }

    /// Raw bytes as they are: a header alone, an inline command, a chunk.
    pub fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.s.write_all(bytes)
    }

    pub fn send(&mut self, args: &[&[u8]]) {
        self.try_send(args).expect("write");
    }

    /// The next reply.
    pub fn next_reply(&mut self) -> Result<Frame, NoReply> {
        loop {
            match Frame::parse(&self.buf) {
                Ok(Some((f, used))) => {
                    self.buf.drain(..used);
                    return Ok(f);
                }
                Ok(None) => {}
                Err(e) => return Err(NoReply::Invalid(e.to_string())),
            }
            let mut chunk = [0u8; 65536];
            match self.s.read(&mut chunk) {
                Ok(0) => return Err(NoReply::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(NoReply::Io(e)),
            }
        }
    }

    /// Sends one command and reads its reply.
    pub fn call(&mut self, args: &[&str]) -> Result<Frame, NoReply> {
        let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.try_send(&bytes)?;
        self.next_reply()
    }

    /// [`Raw::call`] for a command that must be answered.
    pub fn cmd(&mut self, args: &[&str]) -> Frame {
        self.call(args)
            .unwrap_or_else(|e| panic!("no reply to {args:?}: {e:?}"))
    }

    /// True once the node has closed the connection (EOF or reset).
    pub fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        loop {
            match self.s.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}
