//! A real SMTP listener for tests: it speaks enough of RFC 5321 for a client such as lettre
//! (`EHLO`/`HELO`, `MAIL`, `RCPT`, `DATA`, `RSET`, `NOOP`, `QUIT`) and keeps every message it
//! accepts. It can be told to refuse messages with a 4xx or 5xx reply, to test failing delivery.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::Timeout;

/// One message the listener accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// The `MAIL FROM` address.
    pub from: String,
    /// The `RCPT TO` addresses.
    pub to: Vec<String>,
    /// The message as sent after `DATA`, headers and body, with CRLF line ends and dot-stuffing
    /// undone.
    pub data: String,
}

impl Mail {
    /// The first header called `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = value.as_mut() {
                if line.starts_with([' ', '\t']) {
                    v.push_str(line);
                    continue;
                }
                break;
            }
            if let Some((key, rest)) = line.split_once(':')
                && key.eq_ignore_ascii_case(name)
            {
                value = Some(rest.trim().to_owned());
            }
        }
        value
    }

    /// Everything after the header block.
    pub fn body(&self) -> &str {
        self.data
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body)
    }
}

/// An SMTP listener on a free port of 127.0.0.1, for as long as it lives.
#[derive(Debug)]
pub struct SmtpServer {
    addr: SocketAddr,
    mails: Arc<Mutex<Vec<Mail>>>,
    refuse_with: Arc<AtomicU16>,
}

impl SmtpServer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind an SMTP listener");
        let addr = listener.local_addr().expect("listener address");
        let mails = Arc::new(Mutex::new(Vec::new()));
        let refuse_with = Arc::new(AtomicU16::new(0));
        let (m, r) = (mails.clone(), refuse_with.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (m, r) = (m.clone(), r.clone());
                std::thread::spawn(move || {
                    let _ = session(stream, &m, &r);
                });
            }
        });
        Self {
            addr,
            mails,
            refuse_with,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `smtp://127.0.0.1:<port>`, as lettre takes it (plain text, no TLS).
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// Answer `DATA` with `code` (a 4xx or 5xx) from now on; 0 accepts again.
    pub fn refuse_with(&self, code: u16) {
        self.refuse_with.store(code, Ordering::SeqCst);
    }

    /// The messages accepted so far.
    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().expect("mail list").clone()
    }

    /// Waits up to `timeout` until at least `count` messages have been accepted.
    pub fn wait_for(&self, count: usize, timeout: Duration) -> Result<Vec<Mail>, Timeout> {
        let deadline = Instant::now() + timeout;
        loop {
            let mails = self.mails();
            if mails.len() >= count {
                return Ok(mails);
            }
            if Instant::now() > deadline {
                return Err(Timeout {
                    what: format!("{} of {count} mails arrived", mails.len()),
                    within: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn address(argument: &str) -> String {
    let argument = argument.trim();
    match (argument.find('<'), argument.find('>')) {
        (Some(open), Some(close)) if open < close => argument[open + 1..close].to_owned(),
        _ => argument.to_owned(),
    }
}

fn session(
    stream: TcpStream,
    mails: &Mutex<Vec<Mail>>,
    refuse_with: &AtomicU16,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    writer.write_all(b"220 hookbus-testkit ESMTP\r\n")?;
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let command = line.trim_end();
        let verb = command
            .split([' ', ':'])
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-hookbus-testkit\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
            "HELO" | "NOOP" => b"250 OK\r\n",
            "MAIL" => {
                from = address(command.split_once(':').map_or("", |(_, a)| a));
                to.clear();
                b"250 OK\r\n"
            }
            "RCPT" => {
                to.push(address(command.split_once(':').map_or("", |(_, a)| a)));
                b"250 OK\r\n"
            }
            "RSET" => {
                from.clear();
                to.clear();
                b"250 OK\r\n"
            }
            "DATA" => {
                writer.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line)? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                    let unstuffed = line.strip_prefix('.').unwrap_or(&line);
                    data.push_str(unstuffed);
                }
                match refuse_with.load(Ordering::SeqCst) {
                    0 => {
                        mails.lock().expect("mail list").push(Mail {
                            from: std::mem::take(&mut from),
                            to: std::mem::take(&mut to),
                            data,
                        });
                        b"250 OK queued\r\n"
                    }
                    code => {
                        writer.write_all(format!("{code} refused by the test\r\n").as_bytes())?;
                        continue;
                    }
                }
            }
            "QUIT" => {
                writer.write_all(b"221 Bye\r\n")?;
                return Ok(());
            }
            _ => b"502 Command not implemented\r\n",
        };
        writer.write_all(reply)?;
    }
}
